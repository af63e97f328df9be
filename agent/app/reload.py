"""What a reload changes: the difference between the running config and a new one, as a plan.

Pure: no I/O, no tasks. ``Agent.reload`` validates the new file, asks for a plan and carries it out, so
what a reload does can be read (and tested) apart from how the agent does it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.config import Config, JournalSourceConfig, LogSourceConfig

SourceConfig = LogSourceConfig | JournalSourceConfig


@dataclass
class ReloadPlan:
    config: Config
    """The config to run: the new one, with what only a restart can change kept as it was."""
    needs_restart: list[str] = field(default_factory=list)
    """Keys whose change is ignored until a restart (said in the log)."""
    outputs_stop: list[str] = field(default_factory=list)
    outputs_start: list[str] = field(default_factory=list)
    """New outputs, and changed ones (stopped first)."""
    sources_stop: list[str] = field(default_factory=list)
    sources_start: list[SourceConfig] = field(default_factory=list)
    """New sources, and those whose settings other than rules changed (stopped first: read again from their
    committed checkpoints)."""
    sources_new_rules: list[SourceConfig] = field(default_factory=list)
    """Sources whose rules alone changed: swapped in place, offsets and queue untouched."""
    checks_changed: bool = False


def plan_reload(old: Config, new: Config, running: Mapping[str, SourceConfig]) -> ReloadPlan:
    keep: dict[str, object] = {}
    if (new.state_dir, new.outbox) != (old.state_dir, old.outbox):
        keep.update(state_dir=old.state_dir, outbox=old.outbox)
    if new.health != old.health:
        keep.update(health=old.health)
    if new.log_format != old.log_format:
        keep.update(log_format=old.log_format)
    if new.rule_processes != old.rule_processes:
        keep.update(rule_processes=old.rule_processes)
    plan = ReloadPlan(new.model_copy(update=keep) if keep else new, needs_restart=list(keep))

    old_outputs = {o.name: o for o in old.flashduty}
    new_outputs = {o.name: o for o in new.flashduty}
    for name, output in new_outputs.items():
        if old_outputs.get(name) != output:
            if name in old_outputs:
                plan.outputs_stop.append(name)
            plan.outputs_start.append(name)
    plan.outputs_stop += [name for name in old_outputs if name not in new_outputs]

    wanted = {s.name: s for s in [*new.logs, *new.journal]}
    for name, current in running.items():
        cfg = wanted.get(name)
        if cfg is None:
            plan.sources_stop.append(name)
        elif type(cfg) is not type(current) or cfg.model_dump(exclude={"rules"}) != current.model_dump(
                exclude={"rules"}):
            plan.sources_stop.append(name)
            plan.sources_start.append(cfg)
        elif cfg.rules != current.rules:
            plan.sources_new_rules.append(cfg)
    plan.sources_start += [cfg for name, cfg in wanted.items() if name not in running]
    plan.checks_changed = new.checks != old.checks
    return plan
