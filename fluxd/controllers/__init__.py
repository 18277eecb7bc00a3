"""The Flux controllers, one package each; they know each other only through
``fluxd.artifacts`` (the artifact bus) and ``fluxd.runtime.events``."""
