"""voicegate: a realtime voice gateway in front of the OpenAI Realtime API or a local engine."""

from voicegate.config import RateLimit, Settings, load_settings, package_version
from voicegate.errors import VoicegateError

__version__ = package_version()

__all__ = ["RateLimit", "Settings", "VoicegateError", "__version__", "load_settings"]
