"""Why does RL learn on one kit task and not another? Measurements without verl.

A plain GRPO loop (sample, score, group-normalise, PPO-clip, token-mean, AdamW, grad clip 1.0, as
verl's actor does) on the kit's warm-started model, small enough to run a configuration in a
minute on two cores, plus the two measurements that explain its results:

    python benchmarks/kit_rl_dynamics.py train --task chain --lr 1e-4            # collapses
    python benchmarks/kit_rl_dynamics.py train --task chain --lr 1e-2 --only model.norm   # learns
    python benchmarks/kit_rl_dynamics.py train --task add --lr 5e-5              # learns
    python benchmarks/kit_rl_dynamics.py snr --task chain                       # gradient signal per tensor
    python benchmarks/kit_rl_dynamics.py temperature --task chain               # accuracy vs sampling temperature

`train` prints the held-out probe (accuracy sampled at T=1, mean@4; greedy; and the exact
probability of the fully right answer, teacher-forced) every `--eval-every` steps, and the
training reward of the first and last fifth of the steps. It reproduces what verl's trainer does
on the same kit (docs/mini-benchmark.md compares them), so a learning failure it shares is the
learning problem's, not verl's pipeline's. Options switch one thing at a time: `--optim sgd`,
`--adv-sign pos|neg`, `--only <parameter name part>`, `--warmup`, `--beta2`, `--eps`,
`--prompts`/`--n`/`--mini` (batch and mini-batch sizes), `--reward acc|score`.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from maspo_verl.kit import build_kit, reward
from maspo_verl.kit.model import prompt_token_ids
from maspo_verl.kit.tasks import get_task
from maspo_verl.padding import left_pad

WELL_FORMED = {"chain": re.compile(r"\d+(,\d+){4}"), "add": re.compile(r"\d+")}


class Kit:
    """The kit's model, tokenizer, splits and reward for one task."""

    def __init__(self, task: str):
        self.task = get_task(task)
        paths = build_kit(task=task, log=lambda message: None)
        self.train, self.held_out = self.task.split_problems(paths.info["settings"]["seed"], paths.info["val_size"])
        self.tokenizer = AutoTokenizer.from_pretrained(paths.model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(paths.model_dir, dtype=torch.float32)
        self.eos, self.pad = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        self._score = getattr(reward, self.task.reward_name)

    def score(self, text: str, problem) -> dict:
        value = self._score(solution_str=text, ground_truth=problem.answer)
        return value if isinstance(value, dict) else {"score": value, "acc": value}

    @torch.no_grad()
    def generate(self, problems, temperature: float = 1.0):
        """(prompt ids, prompt mask, response ids, response mask up to and including the first eos)."""
        ids, mask = left_pad(prompt_token_ids(self.tokenizer, problems), self.pad)
        # every knob explicit: the kit saves a sampling generation_config, whose values fill the unset ones
        sampling = (
            dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature else {"do_sample": False}
        )
        config = GenerationConfig(max_new_tokens=self.task.max_response_tokens, eos_token_id=self.eos,
                                  pad_token_id=self.pad, **sampling)  # fmt: skip
        self.model.eval()
        responses = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)[:, ids.shape[1] :]
        is_eos = responses == self.eos
        after_eos = (is_eos.cumsum(1) - is_eos.long()) > 0
        return ids, mask, responses, ~after_eos & ((responses != self.pad) | is_eos)

    def token_log_probs(self, ids, mask, responses, response_mask):
        """Per-token log-probs of the responses (zero where masked), positions as generate uses them."""
        full = torch.cat([ids, responses], 1)
        attention = torch.cat([mask, response_mask.long()], 1)
        positions = (attention.cumsum(1) - 1).clamp_min(0)
        logits = self.model(input_ids=full, attention_mask=attention, position_ids=positions).logits
        logits = logits[:, ids.shape[1] - 1 : -1].float()
        picked = torch.log_softmax(logits, -1).gather(-1, responses.unsqueeze(-1)).squeeze(-1)
        return picked * response_mask

    def texts(self, responses) -> list[str]:
        return self.tokenizer.batch_decode(responses, skip_special_tokens=True)

    @torch.no_grad()
    def probe(self, samples: int = 4, temperature: float = 1.0) -> dict:
        """Held-out accuracy sampled (mean@samples), greedy, the share of well-formed answers, and the
        exact probability of the fully right worked answer (teacher-forced), each averaged over prompts."""
        torch.manual_seed(1234)
        repeated = [p for p in self.held_out for _ in range(samples)]
        texts = self.texts(self.generate(repeated, temperature)[2])
        sampled = [self.score(t, p) for t, p in zip(texts, repeated)]
        greedy = [
            self.score(t, p)["acc"] for t, p in zip(self.texts(self.generate(self.held_out, 0)[2]), self.held_out)
        ]
        ids, mask = left_pad(prompt_token_ids(self.tokenizer, self.held_out), self.pad)
        targets = [self.tokenizer(p.target, add_special_tokens=False).input_ids + [self.eos] for p in self.held_out]
        responses = torch.full((len(targets), max(map(len, targets))), self.pad)
        response_mask = torch.zeros(responses.shape, dtype=torch.bool)
        for row, target in enumerate(targets):
            responses[row, : len(target)] = torch.tensor(target)
            response_mask[row, : len(target)] = True
        p_right = self.token_log_probs(ids, mask, responses, response_mask).sum(1).exp().mean().item()
        return {
            "acc": sum(s["acc"] for s in sampled) / len(sampled),
            "score": sum(s["score"] for s in sampled) / len(sampled),
            "greedy": sum(greedy) / len(greedy),
            "well_formed": sum(bool(WELL_FORMED[self.task.name].fullmatch(t.strip())) for t in texts) / len(texts),
            "p_right": p_right,
        }


def grpo_advantages(rewards: torch.Tensor, n: int) -> torch.Tensor:
    groups = rewards.view(-1, n)
    return ((groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-6)).view(-1)


def train(args) -> None:
    torch.manual_seed(args.seed)
    kit = Kit(args.task)
    params = [p for name, p in kit.model.named_parameters() if args.only in name]
    if args.optim == "adamw":
        optimizer = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, args.beta2), eps=args.eps, weight_decay=0.01)
    else:
        optimizer = torch.optim.SGD(params, lr=args.lr)
    print(f"training {sum(p.numel() for p in params)} of {kit.model.num_parameters()} parameters", flush=True)
    rng, log, started = random.Random(args.seed), [], time.time()
    log.append({"step": 0, **kit.probe()})
    print(json.dumps(log[-1]), flush=True)
    for step in range(1, args.steps + 1):
        problems = [p for p in rng.sample(kit.train, args.prompts) for _ in range(args.n)]
        ids, mask, responses, response_mask = kit.generate(problems)
        rewards = torch.tensor([kit.score(t, p)[args.reward] for t, p in zip(kit.texts(responses), problems)])
        advantages = grpo_advantages(rewards, args.n)
        if args.adv_sign == "pos":
            advantages = advantages.clamp_min(0)
        elif args.adv_sign == "neg":
            advantages = advantages.clamp_max(0)
        with torch.no_grad():
            old = kit.token_log_probs(ids, mask, responses, response_mask)
        kit.model.train()
        size = args.mini * args.n
        for start in range(0, len(problems), size):
            rows = slice(start, start + size)
            new = kit.token_log_probs(ids[rows], mask[rows], responses[rows], response_mask[rows])
            ratio = torch.exp((new - old[rows]).clamp(-20, 20))
            advantage = advantages[rows, None]
            per_token = -torch.minimum(ratio * advantage, ratio.clamp(0.8, 1.2) * advantage)
            weights = response_mask[rows].float()
            loss = (per_token * weights).sum() / weights.sum()
            if args.warmup:
                for group in optimizer.param_groups:
                    group["lr"] = args.lr * min(1.0, (step - 1 + start / len(problems)) / args.warmup)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
        record = {"step": step, "reward": rewards.mean().item()}
        if step % args.eval_every == 0:
            record.update(kit.probe())
            print(json.dumps(record), f"{time.time() - started:.0f} s", flush=True)
        log.append(record)
    rewards = [r["reward"] for r in log[1:]]
    fifth = max(1, len(rewards) // 5)
    print(f"training reward, first vs last fifth of the steps: {sum(rewards[:fifth]) / fifth:.3f} -> "
          f"{sum(rewards[-fifth:]) / fifth:.3f}")  # fmt: skip
    if args.out:
        with open(args.out, "w") as out:
            json.dump({"args": vars(args), "log": log}, out, indent=1)


def snr(args) -> None:
    """Gradient of the GRPO loss on `--batches` independent batches of prompts x n samples: how well
    the mean directions of two halves agree, overall and per parameter tensor."""
    torch.manual_seed(args.seed)
    kit = Kit(args.task)
    rng, grads = random.Random(args.seed), []
    for _ in range(args.batches):
        problems = [p for p in rng.sample(kit.train, args.prompts) for _ in range(args.n)]
        ids, mask, responses, response_mask = kit.generate(problems)
        rewards = torch.tensor([kit.score(t, p)["score"] for t, p in zip(kit.texts(responses), problems)])
        log_probs = kit.token_log_probs(ids, mask, responses, response_mask)
        loss = -(log_probs * grpo_advantages(rewards, args.n)[:, None]).sum() / response_mask.sum()
        kit.model.zero_grad()
        loss.backward()
        grads.append({name: p.grad.detach().flatten().clone() for name, p in kit.model.named_parameters()})
    half = args.batches // 2

    def cos(a, b):
        return (a @ b / (a.norm() * b.norm())).item()

    def halves(name=None):
        pick = (lambda g: g[name]) if name else (lambda g: torch.cat(list(g.values())))
        first = torch.stack([pick(g) for g in grads[:half]]).mean(0)
        second = torch.stack([pick(g) for g in grads[half:]]).mean(0)
        return first, second

    per_half = half * args.prompts * args.n
    print(f"cos(mean gradient of half 1, half 2), all parameters, {per_half} samples per half: {cos(*halves()):.3f}")
    rows = []
    for name, parameter in kit.model.named_parameters():
        first, second = halves(name)
        rows.append((cos(first, second), name, parameter.numel(), (first + second).norm().item() / 2,
                     parameter.detach().abs().mean().item()))  # fmt: skip
    print(f"{'tensor':48s} {'numel':>7s} {'cos halves':>10s} {'|mean grad|':>11s} {'mean |w|':>9s}")
    for agreement, name, numel, norm, weight in sorted(rows, reverse=True):
        print(f"{name:48s} {numel:7d} {agreement:10.3f} {norm:11.4f} {weight:9.4f}")


def temperature(args) -> None:
    kit = Kit(args.task)
    for value in (1.0, 0.8, 0.6, 0.4, 0.2):
        probe = kit.probe(samples=4, temperature=value)
        print(f"T={value}: held-out accuracy {probe['acc']:.3f} (mean@4), training reward {probe['score']:.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "snr", "temperature"):
        command = commands.add_parser(name)
        command.add_argument("--task", default="chain", choices=["chain", "add"])
        command.add_argument("--seed", type=int, default=0)
        command.add_argument("--prompts", type=int, default=8, help="prompts per step (or per batch for snr)")
        command.add_argument("--n", type=int, default=8, help="samples per prompt")
    train_parser = commands.choices["train"]
    train_parser.add_argument("--lr", type=float, default=1e-4)
    train_parser.add_argument(
        "--mini", type=int, default=2, help="prompts per mini-batch (updates per step = prompts / mini)"
    )
    train_parser.add_argument("--steps", type=int, default=40)
    train_parser.add_argument("--eval-every", type=int, default=10)
    train_parser.add_argument("--optim", default="adamw", choices=["adamw", "sgd"])
    train_parser.add_argument("--beta2", type=float, default=0.999)
    train_parser.add_argument("--eps", type=float, default=1e-8)
    train_parser.add_argument("--warmup", type=int, default=0, help="linear warm-up over this many steps")
    train_parser.add_argument("--adv-sign", default="both", choices=["both", "pos", "neg"])
    train_parser.add_argument("--only", default="", help="train only parameters whose name contains this")
    train_parser.add_argument("--reward", default="score", choices=["score", "acc"])
    train_parser.add_argument("--out", default=None, help="write the log as JSON")
    commands.choices["snr"].add_argument("--batches", type=int, default=16)
    args = parser.parse_args(argv)
    {"train": train, "snr": snr, "temperature": temperature}[args.command](args)


if __name__ == "__main__":
    main()
