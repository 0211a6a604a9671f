"""gpt-oss on ONNX Runtime: harmony rendering and parsing, continuous batching, async event streams.

Plain Python with no Ray or FastAPI import; the serving layer wraps `Engine` in a deployment.
"""

from appliance.engine.engine import Engine, collect
from appliance.engine.harmony import HarmonyStream, render_prompt
from appliance.engine.types import (
    EngineBusy,
    EngineError,
    Event,
    FinishEvent,
    GenerationRequest,
    ServedBy,
    TextEvent,
    ToolCallEvent,
    Usage,
)
from appliance.vocabulary import VOCAB_FILE, load_harmony, write_vocabulary

__all__ = [
    "VOCAB_FILE",
    "Engine",
    "EngineBusy",
    "EngineError",
    "Event",
    "FinishEvent",
    "GenerationRequest",
    "HarmonyStream",
    "ServedBy",
    "TextEvent",
    "ToolCallEvent",
    "Usage",
    "collect",
    "load_harmony",
    "render_prompt",
    "write_vocabulary",
]
