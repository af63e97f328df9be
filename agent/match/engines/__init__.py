"""The fast engines that nominate candidate lines, behind one interface (``base.Engine``).

``auto.select`` picks one for a pattern set (hyperscan, then re2, then plain re) and builds it; the
matcher then only calls ``Engine.candidate_lines`` on the chosen engine's variants.
"""

from agent.match.engines.auto import ProgramCache, Selection, available_engines, select
from agent.match.engines.base import CandidateLine, Engine, EngineName, Variant

__all__ = ["CandidateLine", "Engine", "EngineName", "ProgramCache", "Selection", "Variant", "available_engines",
           "select"]
