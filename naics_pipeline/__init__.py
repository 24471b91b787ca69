"""naics-pipeline: NAICS taxonomy -> hardness-labelled triplets -> curriculum-trained embeddings.

The core subpackages (data, curricula, text, training, report) import nothing from dagster, so they
run where dagster is not installed (the GPU machine). The Dagster code location lives in
naics_pipeline.definitions; `-m naics_pipeline` finds it here as `code_location`, imported only when
asked for (the name differs from the `defs` and `definitions` submodules, which shadow attributes).
"""


def __getattr__(name: str):
    if name == "code_location":
        from naics_pipeline.definitions import defs

        return defs
    raise AttributeError(f"module 'naics_pipeline' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "code_location"])
