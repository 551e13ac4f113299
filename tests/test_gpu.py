"""The verl integration on CUDA in bf16 (skipped without CUDA; CPU twins in test_verl_integration)."""

import pytest
import torch

from maspo_verl.algos.maspo import MASPOParams, maspo_token_loss
from verl_batch import make_batch, run_ppo_loss

pytestmark = pytest.mark.gpu


def to_cuda_bf16(data, log_prob):
    data = data.to("cuda")
    log_prob = log_prob.detach().to("cuda", torch.bfloat16).requires_grad_(True)
    return data, log_prob


def test_verl_ppo_loss_on_cuda_bf16_matches_float32_cpu(maspo_actor_config):
    cpu_data, cpu_log_prob = make_batch(bsz=8, resp_len=64, seed=11)
    cpu_loss, _ = run_ppo_loss(maspo_actor_config, cpu_data, cpu_log_prob, micro_batch_size=8)
    data, log_prob = to_cuda_bf16(cpu_data, cpu_log_prob)
    loss, metrics = run_ppo_loss(maspo_actor_config, data, log_prob, micro_batch_size=8)
    assert log_prob.grad.dtype == torch.bfloat16 and log_prob.grad.is_cuda
    assert torch.isfinite(log_prob.grad.float()).all()
    # bf16 log-probs carry ~3 significant digits; the loss is computed in float32 after that.
    assert loss == pytest.approx(cpu_loss, rel=5e-2, abs=5e-3)
    assert 0 < metrics[0]["actor/maspo/gate_mean"].aggregate() <= 1  # verl's ppo_loss returns Metric objects


def test_micro_batches_match_one_batch_on_cuda(maspo_actor_config):
    data, log_prob = to_cuda_bf16(*make_batch(bsz=8, resp_len=64, seed=12))
    whole, _ = run_ppo_loss(maspo_actor_config, data, log_prob, micro_batch_size=8)
    whole_grad = log_prob.grad.clone()
    log_prob.grad = None
    split, _ = run_ppo_loss(maspo_actor_config, data, log_prob, micro_batch_size=2)
    assert split == pytest.approx(whole, rel=1e-3, abs=1e-5)
    torch.testing.assert_close(log_prob.grad.float(), whole_grad.float(), rtol=2e-2, atol=1e-3)


def test_token_loss_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(0)
    shape = (32, 512)
    old = torch.log(torch.rand(shape, generator=g).clamp_min(1e-6))
    new = old + torch.randn(shape, generator=g)
    adv = torch.randn(shape[0], 1, generator=g).expand(shape).contiguous()
    mask = torch.rand(shape, generator=g) < 0.8
    cpu = maspo_token_loss(new, old, adv, mask, MASPOParams())
    gpu = maspo_token_loss(new.cuda(), old.cuda(), adv.cuda(), mask.cuda(), MASPOParams())
    torch.testing.assert_close(gpu.loss_mat.cpu(), cpu.loss_mat, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gpu.gate.cpu(), cpu.gate, rtol=1e-5, atol=1e-6)


def test_tiny_kit_trains_on_cuda_with_the_hf_rollout(tmp_path):
    """verl's trainer end to end on one GPU: fp32 hf rollout and FSDP2 actor, maspo metrics, checkpoint,
    and the rollout sampling the policy being trained."""
    from test_e2e_kit import MASPO_METRICS, REWARD, VAL_ACC, run_trainer

    steps = run_trainer(
        tmp_path, "algorithm=maspo", "trainer.total_training_steps=3", "trainer.test_freq=3",
        "trainer.save_freq=3", kit="tiny_gpu",
    )  # fmt: skip
    assert sorted(steps) == [0, 1, 2, 3] and VAL_ACC in steps[3]
    assert all(key in steps[s] for s in (1, 2, 3) for key in MASPO_METRICS + [REWARD])
    assert all(steps[s]["training/rollout_probs_diff_max"] < 1e-3 for s in (1, 2, 3))
    assert (tmp_path / "ckpt" / "global_step_3").is_dir()
