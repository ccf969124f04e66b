"""``i2v suggest``: the preset a picture calls for and the options it sets, each with a reason; no stack needed."""

import json
from pathlib import Path

from contracts.params import GenerationParams, PresetName, Resolution
from services.cli.errors import CliError


def run_suggest(image: Path, *, preset: PresetName, model: str, resolution: Resolution | None, as_json: bool) -> int:
    """Print what ``i2v generate --preset PRESET`` would set for ``image``: as text, or as the JSON
    ``POST /v1/suggest`` answers."""
    from pipeline.image import ImageRejected, check_image
    from pipeline.model_catalog import ModelNotFoundError, model_defaults
    from pipeline.presets import resolve_preset, small_picture

    try:
        data = image.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{image}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{image}: is a folder; name a picture") from None
    except OSError as exc:
        raise CliError(f"{image}: cannot read ({exc.strerror})") from None
    try:
        defaults = model_defaults(model)
    except ModelNotFoundError as exc:
        raise CliError(str(exc)) from None
    requested = (resolution.width, resolution.height) if resolution else None
    try:
        video_size = check_image(data, model_size=(defaults.width, defaults.height), requested=requested)
    except ImageRejected as exc:
        raise CliError(f"{image}: {exc}") from None
    params = GenerationParams(model=model, resolution=resolution, preset=preset or "auto")
    suggestion = resolve_preset(small_picture(data), params, video_size)
    if as_json:
        print(json.dumps(suggestion.as_json(), indent=2))
        return 0
    print(f"preset    {suggestion.preset}  ({suggestion.reasons['preset']})")
    for name, value in suggestion.values.items():
        print(f"  {'--' + name.replace('_', '-'):<22} {value!s:<9} {suggestion.reasons[name]}")
    cues = ", ".join(f"{name} {share:.0%}" for name, share in suggestion.as_json()["cues"].items())
    print(f"cues      {cues}")
    print(f"use it:   i2v generate {image} --preset {suggestion.preset}")
    return 0
