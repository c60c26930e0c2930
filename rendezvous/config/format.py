"""The configuration file's format, declared once.

The loader validates with these definitions, ``rendezvous config schema`` prints their JSON
Schema, and ``docs/configuration.md`` is generated from them: a key exists only if it is here.

Each field carries two small annotations besides its pydantic constraints: ``Expect`` (the phrase
an error uses for what the field takes) and, for keys added after the first format version,
``Since`` (the format version that introduced the key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag

FORMAT_VERSION = 6
"""The newest format version this release reads. A file without ``version`` is read as this."""

ROLES = ("champion", "challenger", "canary", "backstop", "decoy")
FIELD_TYPES = ("double", "long", "string", "boolean")
ISOLATION = ("thread", "process")
DEFAULT_GRACE_MS = 2000
NAME_PATTERN = r"^[A-Za-z0-9_-]+$"


@dataclass(frozen=True)
class Expect:
    """What a field takes, as an error message says it: ``expected <phrase>, got ...``."""

    phrase: str


@dataclass(frozen=True)
class Since:
    """The format version that introduced a key."""

    version: int


class Strict(BaseModel):
    """No coercion (``"100"`` is not an integer) and no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    __expect__ = "a mapping"


class Model(Strict):
    """One model of a service: what scores requests, and the part it plays."""

    __expect__ = "a mapping {name, role, uri | callable}"

    name: Annotated[
        str,
        Field(pattern=NAME_PATTERN, description="The model's name in scores, decisions and SQL."),
        Expect("a name of letters, digits, - and _"),
    ]
    role: Annotated[
        Literal[ROLES],
        Field(
            description=(
                "`champion` answers first; `canary` answers when the champion is late; "
                "`challenger` scores as a shadow unless named in `preference`; `backstop` is the "
                "fast fallback; `decoy` scores nothing and only archives what the models saw."
            )
        ),
        Expect(f"one of {', '.join(ROLES)}"),
    ]
    uri: Annotated[
        str | None,
        Field(
            pattern=r"^(models:|runs:|file:|/)",
            description=(
                "An MLflow model URI: `models:/name@alias`, `models:/name/3`, "
                "`runs:/<run id>/path`, `file:` or an absolute path. Exactly one of `uri` and "
                "`callable` (neither for a decoy)."
            ),
        ),
        Expect("models:/name@alias, models:/name/3, runs:/<id>/path or a path"),
    ] = None
    callable: Annotated[
        str | None,
        Field(
            pattern=r"^[^:\s]+:[^:\s]+$",
            description=(
                "A Python function `package.module:function` that takes the features and "
                "returns a score. Exactly one of `uri` and `callable`."
            ),
        ),
        Expect("'package.module:function'"),
    ] = None
    params: Annotated[
        dict[str, Any],
        Field(description="Keyword arguments passed to the callable."),
        Expect("a mapping"),
    ] = {}
    isolation: Annotated[
        Literal[ISOLATION],
        Field(
            description=(
                "`thread`: the scoring job's Python runs in the TaskManager's shared interpreter "
                "(cheapest). `process`: in a Python process of its own, so a model that holds "
                "the CPU does not hold every other job's interpreter lock."
            )
        ),
        Expect(f"one of {', '.join(ISOLATION)}"),
        Since(2),
    ] = "thread"
    sample: Annotated[
        float | None,
        Field(
            gt=0,
            le=1,
            description=(
                "The share of requests the model scores (a shadow's cost cap), chosen by a "
                "stable hash of `sample_key`: the same request is always in or out. The others "
                "are recorded as not sampled, never as late, and the answer never waits for "
                "them. A sampled model cannot be the head of `preference` or an arm of `split`. "
                "Default: every request."
            ),
        ),
        Expect("a share greater than 0 and at most 1"),
        Since(4),
    ] = None
    sample_key: Annotated[
        str | None,
        Field(
            description=(
                "The request field whose value decides `sample` (one of the service's input "
                "fields); a request without it is not sampled. Default: the request ID."
            )
        ),
        Expect("an input field name"),
        Since(4),
    ] = None
    quota_weight: Annotated[
        int | None,
        Field(
            ge=1,
            description=(
                "What the model's score costs from the quota of the API key that sent the "
                "request, in tokens: a request costs the weights of the models that score it "
                "(a sampled model that skips it costs nothing; a model without a weight costs "
                "1). When no model of the service has a weight, a request costs 1 whatever its "
                "models. Not for a decoy. Default: 1."
            ),
        ),
        Expect("a whole number of tokens >= 1"),
        Since(5),
    ] = None
    parallelism: Annotated[
        int,
        Field(
            ge=1,
            le=64,
            description=(
                "Parallel tasks of the model's scoring job, each in a task slot of its own and "
                "reading its share of the model-input partitions (the topic needs at least as "
                "many partitions: `kafka_partitions`). Default: 1."
            ),
        ),
        Expect("a whole number of tasks from 1 to 64"),
        Since(6),
    ] = 1


class InputField(Strict):
    """One field of the request body: its type, and whether a request must carry it."""

    __expect__ = "a type name or {type, required, default}"

    type: Annotated[
        Literal[FIELD_TYPES],
        Field(description="The field's type."),
        Expect(f"one of {', '.join(FIELD_TYPES)}"),
    ]
    required: Annotated[
        bool | None,
        Field(
            description="Whether a request must carry the field. Default: true unless `default` is set."
        ),
        Expect("true or false"),
    ] = None
    default: Annotated[Any, Field(description="The value used when a request omits the field.")] = (
        None
    )


def _type_name(value: Any) -> Any:
    return {"type": value} if isinstance(value, str) else value


InputFieldOrType = Annotated[
    InputField,
    BeforeValidator(_type_name, json_schema_input_type=Literal[FIELD_TYPES] | InputField),
]


class FromModel(Strict):
    """Take the input fields from a model's MLflow signature."""

    __expect__ = "{from_model: <model name>}"

    from_model: Annotated[
        str,
        Field(description="The model (by name) whose MLflow signature defines the input."),
        Expect("the name of one of the service's models"),
    ]


def _input_kind(value: Any) -> str:
    return "from_model" if isinstance(value, dict) and "from_model" in value else "fields"


Input = Annotated[
    Annotated[FromModel, Tag("from_model")]
    | Annotated[dict[str, InputFieldOrType], Field(min_length=1), Tag("fields")],
    Discriminator(_input_kind),
]


class _Step(Strict):
    __expect__ = "a mapping {op, ...}"


class Rename(_Step):
    """Rename field `from` to `to` (nothing happens when the request lacks `from`)."""

    op: Annotated[Literal["rename"], Field(description="The step's kind.")]
    from_: Annotated[
        str, Field(alias="from", description="The field to rename."), Expect("a field name")
    ]
    to: Annotated[str, Field(description="Its new name."), Expect("a field name")]


class Default(_Step):
    """Set `field` to `value` when the request omits it or sends null."""

    op: Annotated[Literal["default"], Field(description="The step's kind.")]
    field: Annotated[str, Field(description="The field to fill in."), Expect("a field name")]
    value: Annotated[Any, Field(description="The value to use.")]


# The arithmetic steps read a numeric field and write the result to another (or in place).
_NumericField = Annotated[
    str, Field(description="The numeric field to read."), Expect("a field name")
]
_Target = Annotated[
    str | None,
    Field(description="Where to write the result (default: `field` itself)."),
    Expect("a field name"),
]


class Log1p(_Step):
    """`to` = ln(1 + `field`); `field` must be a number > -1."""

    op: Annotated[Literal["log1p"], Field(description="The step's kind.")]
    field: _NumericField
    to: _Target = None


class Scale(_Step):
    """`to` = `field` × `factor`."""

    op: Annotated[Literal["scale"], Field(description="The step's kind.")]
    field: _NumericField
    factor: Annotated[float, Field(description="The multiplier."), Expect("a number")]
    to: _Target = None


class Lookup(_Step):
    """Join a row of a CSV table on `key` and add its columns to the features."""

    op: Annotated[Literal["lookup"], Field(description="The step's kind.")]
    key: Annotated[str, Field(description="The request field to look up."), Expect("a field name")]
    table: Annotated[
        str,
        Field(
            description="A CSV file with a header row; a relative path is read from the configuration file's directory."
        ),
        Expect("a path to a CSV file"),
    ]
    table_key: Annotated[
        str | None,
        Field(description="The table's column to match (default: `key`)."),
        Expect("a column name"),
    ] = None
    prefix: Annotated[
        str, Field(description="Prefix for the added columns' names."), Expect("a string")
    ] = ""
    missing: Annotated[
        dict[str, Any] | None,
        Field(
            description="The columns to add when no row matches (default: the request fails with an enrichment error)."
        ),
        Expect("a mapping of column to value"),
    ] = None


class Drop(_Step):
    """Remove `field` from the features."""

    op: Annotated[Literal["drop"], Field(description="The step's kind.")]
    field: Annotated[str, Field(description="The field to remove."), Expect("a field name")]


class Split(Strict):
    """A sticky A/B split: a stable hash of a request field picks the arm whose model answers."""

    __expect__ = "a mapping {key, arms}"

    key: Annotated[
        str,
        Field(
            description=(
                "The request field (one of the service's input fields) whose value picks the "
                "arm: the same value always gets the same arm."
            )
        ),
        Expect("an input field name"),
    ]
    arms: Annotated[
        dict[
            str,
            Annotated[float, Field(gt=0, allow_inf_nan=False), Expect("a positive number")],
        ],
        Field(
            min_length=1,
            description=(
                "Model name to weight (positive numbers, any scale: `{gbm: 90, lr: 10}`). The "
                "arm's model answers first; the rest of `preference` and the backstop follow "
                "as fallbacks. Every model still scores every request. Change the weights at "
                "runtime with `rendezvous split`."
            ),
        ),
        Expect("a mapping of model name to a positive weight"),
    ]


STEPS = (Rename, Default, Log1p, Scale, Lookup, Drop)
ENRICH_OPS = tuple(s.model_fields["op"].annotation.__args__[0] for s in STEPS)
Step = Annotated[Rename | Default | Log1p | Scale | Lookup | Drop, Field(discriminator="op")]


# A guard threshold that is a share of requests.
Share = Annotated[
    float | None,
    Field(gt=0, le=1, allow_inf_nan=False),
    Expect("a share between 0 (excluded) and 1"),
]


class Guard(Strict):
    """Rollback on its own (`rendezvous guard`): the live first choice is taken off when a
    figure stays above its threshold for `for_s`."""

    __expect__ = "a mapping {error_rate, late_rate, psi, window_s, for_s, min_requests}"

    error_rate: Annotated[
        Share,
        Field(
            description="The share of requests on which the first choice fails, above which it is taken off."
        ),
    ] = None
    late_rate: Annotated[
        Share,
        Field(
            description="The share of requests the first choice misses the deadline of, above which it is taken off."
        ),
    ] = None
    psi: Annotated[
        float | None,
        Field(
            gt=0,
            allow_inf_nan=False,
            description=(
                "The PSI of the first choice's numeric answers over the window against its first "
                "answers as first choice, above which it is taken off."
            ),
        ),
        Expect("a positive number"),
    ] = None
    window_s: Annotated[
        float,
        Field(
            gt=0,
            le=86_400,
            allow_inf_nan=False,
            description="The rolling window, in seconds, the figures are computed over.",
        ),
        Expect("seconds between 0 (excluded) and 86400"),
    ] = 60
    for_s: Annotated[
        float,
        Field(
            ge=0,
            le=86_400,
            allow_inf_nan=False,
            description="How long, in seconds, a figure must stay above its threshold.",
        ),
        Expect("seconds between 0 and 86400"),
    ] = 30
    min_requests: Annotated[
        int,
        Field(ge=1, description="Fewer answers than this in the window: no verdict."),
        Expect("an integer >= 1"),
    ] = 20


class Service(Strict):
    """One service: its deadline, its models and how the answer is chosen."""

    __expect__ = "a mapping with sla_ms and models"

    sla_ms: Annotated[
        int,
        Field(
            ge=1,
            le=600_000,
            description="The deadline: every request is answered by this many milliseconds after the proxy accepted it.",
        ),
        Expect("an integer number of milliseconds between 1 and 600000"),
    ]
    grace_ms: Annotated[
        int,
        Field(
            ge=0,
            description="How long after the deadline late scores are still joined and archived (they never change the answer).",
        ),
        Expect("milliseconds >= 0"),
    ] = DEFAULT_GRACE_MS
    models: Annotated[
        list[Model],
        Field(min_length=1, description="The models that score every request (and the decoy)."),
        Expect("a non-empty list of {name, role, uri | callable}"),
    ]
    preference: Annotated[
        list[str] | None,
        Field(
            min_length=1,
            description=(
                "The order in which scores answer: the first model that scored by the deadline "
                "wins. Default: the champion, canaries, then the backstop; challengers not listed "
                "are shadows."
            ),
        ),
        Expect("a non-empty list of model names"),
    ] = None
    input: Annotated[
        Input,
        Field(
            description=(
                "The request body's fields, `{field: type}` or `{field: {type, required, default}}`, "
                "or `{from_model: <model>}` to take them from that model's MLflow signature."
            )
        ),
        Expect("the input fields ({field: type}) or {from_model: <model name>}"),
    ]
    enrich: Annotated[
        list[Step],
        Field(description="Steps applied in order to each request's features before scoring."),
        Expect("a list of enrichment steps {op, ...}"),
    ] = []
    code: Annotated[
        list[Annotated[str, Field(min_length=1)]],
        Field(
            description=(
                "Where the service's own Python code lives, for its `callable` models: folders "
                "(put on the Python path), `.py` files, or `.zip`/`.whl` archives, relative to "
                "this file. Shipped with each scoring job, so the cluster needs no copy."
            )
        ),
        Expect("a list of paths (folders, .py, .zip or .whl files)"),
        Since(3),
    ] = []
    split: Annotated[
        Split | None,
        Field(
            description=(
                "A sticky A/B split `{key: <input field>, arms: {model: weight, ...}}`: the "
                "request's key picks an arm, whose model becomes its first choice. A request "
                "without the key gets no arm (the preference applies; the arm is recorded as "
                "null). Default: no split."
            )
        ),
        Expect("a mapping {key, arms}"),
        Since(4),
    ] = None
    guard: Annotated[
        Guard | None,
        Field(
            description=(
                "When `rendezvous guard` takes the live first choice off: thresholds on its "
                "error rate, late rate and output PSI, a window and a time. The policy before "
                "it comes back (else the next model in the preference). Default: not guarded."
            )
        ),
        Expect("a mapping {error_rate, late_rate, psi, window_s, for_s, min_requests}"),
        Since(6),
    ] = None


class File(Strict):
    """A configuration file: the services this deployment serves."""

    __expect__ = "a top-level mapping with a 'services' mapping"

    version: Annotated[
        int,
        Field(
            ge=1,
            description=f"The format version the file is written for (1 to {FORMAT_VERSION}; default {FORMAT_VERSION}). A key introduced in a later version than the file declares is an error.",
        ),
        Expect(f"a format version between 1 and {FORMAT_VERSION}"),
    ] = FORMAT_VERSION
    services: Annotated[
        dict[Annotated[str, Field(pattern=NAME_PATTERN)], Service],
        Field(
            min_length=1,
            description="The services, by name (letters, digits, - and _). The name is the proxy's path: `POST /v1/<service>`.",
            # A name outside the pattern is an error, in the schema as in the loader.
            json_schema_extra={"additionalProperties": False},
        ),
        Expect("a mapping of service name to service"),
    ]


def json_schema() -> dict[str, Any]:
    """The format as a JSON Schema (draft 2020-12), for editors and other tools."""
    schema = File.model_json_schema(by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": "Rendezvous service configuration",
    }
