"""The data and its reward: every train/val file is a readable parquet file with the columns
verl reads and at least one batch of training rows; the custom reward function loads; and the
reward reads the answer format of the prompt template each file was prepared with.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import ListConfig

from ..data.templates import PROBES, TEMPLATES, reads_any

REMOTE_PREFIXES = ("hdfs://", "s3://", "gs://", "http://", "https://")


def _as_list(files) -> list[str]:
    if files is None:
        return []
    if isinstance(files, (list, tuple, ListConfig)):
        return [str(item) for item in files]
    return [str(files)]


# ----------------------------------------------------------------------------- data files


def check_data_file(path: str, setting: str, prompt_key: str = "prompt", reward_fn_key: str = "data_source") -> int:
    """Check one verl parquet file; returns its row count (-1 when remote, not checked)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.startswith(REMOTE_PREFIXES):
        return -1
    local = Path(os.path.expanduser(path))
    if not local.is_file():
        hint = " (prepare it with `python -m maspo_verl.data prepare ...`)" if local.suffix == ".parquet" else ""
        raise FileNotFoundError(f"{setting}: data file {path} does not exist{hint}.")
    try:
        parquet = pq.ParquetFile(local)
    except Exception as error:
        raise ValueError(f"{setting}: {path} is not a readable parquet file ({error}).") from error
    schema = parquet.schema_arrow
    expected = (
        f"expected columns {prompt_key!r} (list of {{role, content}}), {reward_fn_key!r} and reward_model.ground_truth"
    )
    missing = [name for name in (prompt_key, reward_fn_key, "reward_model") if name not in schema.names]
    if missing:
        raise ValueError(f"{setting}: {path} lacks column(s) {missing}; {expected}; found {schema.names}.")
    prompt_type = schema.field(prompt_key).type
    if not (pa.types.is_list(prompt_type) or pa.types.is_large_list(prompt_type)) or not (
        pa.types.is_struct(prompt_type.value_type)
        and {"role", "content"}
        <= {prompt_type.value_type.field(i).name for i in range(prompt_type.value_type.num_fields)}
    ):
        raise ValueError(f"{setting}: {path} column {prompt_key!r} has type {prompt_type}; {expected}.")
    reward_type = schema.field("reward_model").type
    if not pa.types.is_struct(reward_type) or reward_type.get_field_index("ground_truth") < 0:
        raise ValueError(f"{setting}: {path} column 'reward_model' has type {reward_type}; {expected}.")
    rows = parquet.metadata.num_rows
    if rows == 0:
        raise ValueError(f"{setting}: {path} has no rows.")
    return rows


def check_data(config) -> dict:
    """Check `data.train_files` and `data.val_files`; returns {path: rows}."""
    data = config.data
    prompt_key = data.get("prompt_key", "prompt")
    reward_fn_key = data.get("reward_fn_key", "data_source")
    rows = {}
    for setting in ("train_files", "val_files"):
        files = _as_list(data.get(setting))
        if not files:
            raise ValueError(f"data.{setting} is empty; set it to one or more verl parquet files.")
        for path in files:
            rows[path] = check_data_file(path, f"data.{setting}", prompt_key, reward_fn_key)
    train_rows = [rows[path] for path in _as_list(data.train_files)]
    if all(count >= 0 for count in train_rows) and sum(train_rows) < data.train_batch_size:
        raise ValueError(
            f"data.train_batch_size={data.train_batch_size} is larger than the training set "
            f"({sum(train_rows)} rows in {_as_list(data.train_files)}): no full batch, so no training step. "
            "Allowed: at most the number of training rows."
        )
    return rows


def files_step(config, found: dict, dry_run: bool) -> dict:
    return {"rows": check_data(config)}


# ----------------------------------------------------------------------------- reward


def check_reward_function(config) -> None:
    reward = config.get("reward") or {}
    function = reward.get("custom_reward_function") or {}
    path = function.get("path")
    if not path:
        return
    name = function.get("name") or "compute_score"
    from verl.utils.import_utils import load_extern_object

    try:
        load_extern_object(module_path=path, object_name=name)
    except (FileNotFoundError, AttributeError, ImportError, RuntimeError) as error:
        raise ValueError(
            f"reward.custom_reward_function.path={path} / name={name} cannot be loaded ({error}). "
            "Allowed: a file path or pkg://module defining that function, e.g. pkg://maspo_verl.rewards.math_score."
        ) from error


def reward_step(config, found: dict, dry_run: bool) -> dict:
    check_reward_function(config)
    return {}


# ----------------------------------------------------------------------------- prompt templates


def _template_probes(path: str, reward_fn_key: str) -> dict[tuple[str, str], list[tuple[object, dict]]]:
    """{(template, data_source): the first PROBES rows' (ground truth, extra_info)} of a prepared
    parquet file; empty when the file records no template (not made by `prepare`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if "extra_info" not in schema.names:
        return {}
    extra_type = schema.field("extra_info").type
    if not pa.types.is_struct(extra_type) or extra_type.get_field_index("template") < 0:
        return {}
    rows = pq.read_table(path, columns=[reward_fn_key, "reward_model", "extra_info"]).to_pylist()
    probes: dict[tuple[str, str], list] = {}
    for row in rows:
        extra = row["extra_info"] or {}
        key = (extra.get("template"), row[reward_fn_key])
        if key[0] and len(probes.setdefault(key, [])) < PROBES:
            probes[key].append(((row["reward_model"] or {}).get("ground_truth"), extra))
    return probes


def configured_reward(config):
    """(the function verl's reward manager will score with, a description naming the setting)."""
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.reward_score import get_default_compute_score

    function = config.reward.get("custom_reward_function") or {}
    custom = get_custom_reward_fn(config)
    if custom is not None:
        return custom, f"reward.custom_reward_function.path={function.get('path')} (name={function.get('name')})"
    manager = config.reward.reward_manager.get("name")
    return get_default_compute_score(manager), "verl's default_compute_score (reward.custom_reward_function.path unset)"


def check_data_templates(config) -> dict:
    """Refuse, before Ray starts, a data file whose prompt template asks for answers in a format
    the configured reward cannot read. Returns {file: [templates found]}."""
    if (config.reward.get("reward_model") or {}).get("enable"):
        return {}  # a reward model reads free text; there is no answer format to check
    reward_fn_key = config.data.get("reward_fn_key", "data_source")
    files = [(f"data.{s}", p) for s in ("train_files", "val_files") for p in _as_list(config.data.get(s))]
    score, reward_name = None, None
    found = {}
    for setting, path in files:
        if path.startswith(REMOTE_PREFIXES):
            continue
        probes = _template_probes(os.path.expanduser(path), reward_fn_key)
        found[path] = sorted({template for template, _ in probes})
        for (template, data_source), rows in probes.items():
            if template not in TEMPLATES:
                raise ValueError(
                    f"{setting}: {path} was prepared with the prompt template {template!r}, which this version does "
                    f"not know (known: {sorted(TEMPLATES)}); prepare it again with `python -m maspo_verl.data prepare`."
                )
            if score is None:
                score, reward_name = configured_reward(config)
            problem = reads_any(template, score, data_source, rows)
            if problem:
                readable = [name for name in TEMPLATES if not reads_any(name, score, data_source, rows)]
                raise ValueError(
                    f"{setting}: {path} was prepared with the prompt template {template!r}, which asks for "
                    f"{TEMPLATES[template].asks_for}, but the reward {reward_name} cannot read it: for data_source "
                    f"{data_source!r} it {problem}. Templates this reward reads: {readable or 'none'}. Fix: prepare "
                    f"the data with one of those (`python -m maspo_verl.data prepare ... --template NAME`), or score "
                    "with reward.custom_reward_function.path=pkg://maspo_verl.rewards.math_score, which reads both "
                    "\\boxed{} and 'Answer:'."
                )
    return found


def templates_step(config, found: dict, dry_run: bool) -> dict:
    return {"templates": check_data_templates(config)}
