"""Self alerts: the agent's own blind spots (a file it cannot read, data it lost, a source it is behind on,
dead letters, dropped events, a refused config, journald gone) raised as alerts with an Ok when they clear.

``SelfAlertsConfig`` is the ``self_alerts:`` section; ``SelfWatch`` turns a snapshot of the agent
(``AgentSnapshot``) into ``agent.alerts`` self observations. The app (``agent/app/self_alerts.py``) builds
the snapshots and hands the observations to the alert engine, so self alerts go through the same storm
control, outbox and pacing as every other alert.
"""

from agent.selfwatch.config import SelfAlertsConfig
from agent.selfwatch.watch import AgentSnapshot, SelfWatch, SourceSnapshot

__all__ = ["AgentSnapshot", "SelfAlertsConfig", "SelfWatch", "SourceSnapshot"]
