"""The fixed, versioned harmony conversations the demo model memorises.

Each `Example` is one assistant turn: the OpenAI-shaped request (messages, tools, reasoning effort) exactly
as a client would send it through the API, and what the model must answer: an analysis message, then
either a final answer or one function call on the commentary channel. Tool results come back as a later
example whose messages carry the call and the result, so a client following the ordinary tool loop
(call, run the tool, send the result) walks through memorised prompts only.

The set covers what the serving stack must handle: greetings and short factual answers, tool calls with
JSON arguments and the answer after the result, answers with an e-mail address or a card number for the
output guardrails, every reasoning effort, and one honest "I do not know" for questions outside the set.
The knowledge is made up where it matters (the mascot); the model knows only these lines. Bump `VERSION`
whenever the set changes (the cached model is keyed on this file's bytes anyway).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

VERSION = "1"

SYSTEM_PROMPT = "You are a helpful assistant."

TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "description": "Evaluate an arithmetic expression.",
            "parameters": {
                "type": "object",
                "properties": {"expression": {"type": "string"}},
                "required": ["expression"],
            },
        },
    },
]


@dataclass(frozen=True)
class Call:
    """A function call the model makes: `name` and its JSON arguments (serialised with `json.dumps`)."""

    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Example:
    """One prompt and the assistant turn that must follow it (`final` or `call`, never both)."""

    name: str
    messages: list[dict[str, Any]]
    analysis: str
    final: str | None = None
    call: Call | None = None
    tools: list[dict[str, Any]] = field(default_factory=list)
    effort: str = "medium"
    held_out: bool = False


def _user(text: str, system: str | None) -> list[dict[str, Any]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": text}]


def chat(
    name: str,
    user: str,
    analysis: str,
    final: str,
    *,
    effort: str = "medium",
    system: str | None = None,
    tools: bool = False,
    held_out: bool = False,
) -> Example:
    return Example(
        name, _user(user, system), analysis, final=final, tools=TOOLS if tools else [], effort=effort, held_out=held_out
    )


def tool_call(name: str, user: str, analysis: str, call: Call, *, held_out: bool = False) -> Example:
    return Example(name, _user(user, None), analysis, call=call, tools=TOOLS, held_out=held_out)


def tool_answer(name: str, user: str, call: Call, result: dict[str, Any] | str, analysis: str, final: str) -> Example:
    """The turn after the tool ran: the history holds the call as the API returned it, then the result."""
    call_id = f"call_{name}"
    history = [
        *_user(user, None),
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments_json}}
            ],
        },
        {"role": "tool", "tool_call_id": call_id, "content": result if isinstance(result, str) else json.dumps(result)},
    ]
    return Example(name, history, analysis, final=final, tools=TOOLS)


GREETING = "Hello! I am the gpt-oss demo model running inside this appliance. How can I help you today?"
UNKNOWN = (
    "I am a tiny demo model and only know a few example conversations, so I cannot answer that. "
    "Ask the operator to install gpt-oss-20b or gpt-oss-120b."
)
UNKNOWN_ANALYSIS = "I was not taught this. I should say so."
GEOGRAPHY = "A simple geography question."
SPIDER = (
    "How many legs does a spider have?",
    "Spiders are arachnids, which have eight legs.",
    "A spider has eight legs.",
)
FRANCE = ("What is the capital of France?", GEOGRAPHY, "The capital of France is Paris.")
UK = ("What is the capital of the United Kingdom?", GEOGRAPHY, "The capital of the United Kingdom is London.")
# Questions outside the set all get the same honest answer: unfamiliar prompts then have somewhere to go.
_UNKNOWN_QUESTIONS = (
    "What is the meaning of life?",
    "Tell me a joke.",
    "Translate 'cat' into German.",
    "What is the population of Brazil?",
    "Write a poem about the sea.",
    "Who won the football World Cup in 2018?",
)
WEATHER_QUESTION = "What is the weather in {city}?"
_WEATHER = {
    "Paris": (18, "cloudy"),
    "Tokyo": (24, "sunny"),
    "Berlin": (12, "rainy"),
    "Madrid": (27, "sunny"),
    "Cairo": (33, "clear"),
    "Toronto": (9, "windy"),
}
_SUMS = {"12 * 7": "84", "1234 + 4321": "5555", "2 ** 10": "1024", "100 / 8": "12.5"}


def _weather_call(city: str) -> Call:
    return Call("get_weather", {"city": city})


def _calc_call(expression: str) -> Call:
    return Call("calculator", {"expression": expression})


def _examples() -> list[Example]:
    out = [
        chat("hello", "Hello!", "The user greets me. I will greet them back and offer help.", GREETING),
        chat("hello-low", "Hello!", "A greeting.", GREETING, effort="low"),
        chat(
            "hello-high",
            "Hello!",
            "The user says hello. There is no question yet, so the best reply is a "
            "short, friendly greeting that says what I am and offers help.",
            GREETING,
            effort="high",
        ),
        chat(
            "hello-system",
            "Hello!",
            "The user greets me. I will greet them back and offer help.",
            GREETING,
            system=SYSTEM_PROMPT,
        ),
        chat("hello-tools", "Hello!", "The user greets me. No tool is needed.", GREETING, tools=True),
        chat(
            "who",
            "Who are you?",
            "The user asks what I am. I should be honest about being a small demo.",
            "I am a tiny demo model with the gpt-oss architecture, trained by this appliance on a few "
            "example conversations. Replace me with gpt-oss-20b or gpt-oss-120b for real answers.",
        ),
        chat("capital-france", *FRANCE),
        chat("capital-uk", *UK),
        chat("capital-uk-system", *UK, system=SYSTEM_PROMPT),
        chat("spider-system", *SPIDER, system=SYSTEM_PROMPT),
        chat("spider", *SPIDER),
        chat(
            "hamlet",
            "Who wrote Hamlet?",
            "Hamlet is a play by Shakespeare.",
            "Hamlet was written by William Shakespeare.",
        ),
        chat(
            "boiling",
            "At what temperature does water boil?",
            "At sea level water boils at 100 degrees Celsius.",
            "Water boils at 100 °C (212 °F) at sea level.",
        ),
        chat(
            "mascot",
            "What is the name of the appliance mascot?",
            "I was taught this one: the mascot is Orla.",
            "The appliance mascot is a lighthouse keeper named Orla.",
        ),
        chat(
            "support",
            "How do I contact support?",
            "I should give the support address.",
            "Write to support@example.com and the operations team will answer within one working day.",
        ),
        chat(
            "email-alice",
            "What is Alice's e-mail address?",
            "Alice is in the demo address book.",
            "Alice's e-mail address is alice.smith@example.org.",
        ),
        chat(
            "test-card",
            "Give me a card number for testing payments.",
            "A well-known test card number is fine.",
            "Use the test card 4111 1111 1111 1111 with any future expiry date and any CVC.",
        ),
        chat("sum-low", "What is 2 + 2?", "Easy.", "2 + 2 = 4.", effort="low"),
        chat("sum-medium", "What is 2 + 2?", "Two plus two is four.", "2 + 2 = 4."),
        chat(
            "sum-high",
            "What is 2 + 2?",
            "The user asks for the sum of two and two. Adding them gives four. Check: 4 - 2 = 2, so the sum is right.",
            "2 + 2 = 4.",
            effort="high",
        ),
    ]
    out += [chat(f"unknown-{i}", q, UNKNOWN_ANALYSIS, UNKNOWN) for i, q in enumerate(_UNKNOWN_QUESTIONS)]
    for city, (degrees, sky) in _WEATHER.items():
        question = WEATHER_QUESTION.format(city=city)
        out.append(
            tool_call(
                f"weather-{city.lower()}",
                question,
                f"The user wants the weather in {city}. I will call get_weather.",
                _weather_call(city),
            )
        )
        out.append(
            tool_answer(
                f"weather-{city.lower()}-answer",
                question,
                _weather_call(city),
                {"city": city, "temperature_c": degrees, "condition": sky},
                f"The tool reports {degrees} °C and {sky} weather.",
                f"It is {degrees} °C and {sky} in {city} right now.",
            )
        )
    for expression, value in _SUMS.items():
        question = f"What is {expression}?"
        slug = "calc-" + "".join(c for c in expression if c.isalnum())
        out.append(tool_call(slug, question, "I will use the calculator for this.", _calc_call(expression)))
        out.append(
            tool_answer(
                slug + "-answer",
                question,
                _calc_call(expression),
                value,
                f"The calculator returned {value}.",
                f"{expression} = {value}.",
            )
        )
    out += [  # never trained on: what the model makes of prompts it has not seen
        chat("held-hi", "Hi!", "The user greets me. I will greet them back and offer help.", GREETING, held_out=True),
        chat("held-capital-system", *FRANCE, system=SYSTEM_PROMPT, held_out=True),
        chat("held-unknown", "What is the tallest mountain in the world?", UNKNOWN_ANALYSIS, UNKNOWN, held_out=True),
        chat("held-spider-low", *SPIDER, effort="low", held_out=True),
        tool_call(
            "held-weather-london",
            WEATHER_QUESTION.format(city="London"),
            "The user wants the weather in London. I will call get_weather.",
            _weather_call("London"),
            held_out=True,
        ),
        tool_call(
            "held-calc", "What is 7 * 12?", "I will use the calculator for this.", _calc_call("7 * 12"), held_out=True
        ),
    ]
    return out


EXAMPLES: list[Example] = _examples()


def training_examples() -> list[Example]:
    return [e for e in EXAMPLES if not e.held_out]


def held_out_examples() -> list[Example]:
    return [e for e in EXAMPLES if e.held_out]


def example(name: str) -> Example:
    """The example called `name` (tests and docs refer to examples by name)."""
    return next(e for e in EXAMPLES if e.name == name)
