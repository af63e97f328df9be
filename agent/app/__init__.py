"""The agent: wires the stages together, supervises them, reloads the config, shows its state.

Rooms: ``agent`` (the lifecycle: start, run, reload, shutdown), ``pipeline`` (one source's batches through
rules and alerts to the writer), ``sources`` (start/stop a source from its checkpoints), ``outputs`` (one
sender per output), ``checks`` (local checks to alerts), ``ticker`` (the alert clock), ``reload`` (config
diff -> plan), ``config_watch``, ``views`` (/healthz, /readyz, /status, metrics), ``supervise``.
"""

from agent.app.agent import Agent, install_signal_handlers

__all__ = ["Agent", "install_signal_handlers"]
