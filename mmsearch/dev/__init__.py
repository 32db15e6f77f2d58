"""The laptop side: ``mmsearch demo`` (plan, build, supervisor) and the embedded servers it starts."""
