import dataclasses

from search.run import parser
from search.spec import SweepSpec
from space_defs.options import SpaceOptions


def test_search_run_and_the_preview_take_the_space_options_from_one_definition():
    assert issubclass(SweepSpec, SpaceOptions)
    names = [f.name for f in dataclasses.fields(SpaceOptions)]
    help_text = parser().format_help()
    assert all(f"--{name.replace('_', '-')}" in help_text for name in names)
    spec = SweepSpec(name="x", budget=60_000, dataset="digits", min_blocks=1, max_blocks=2,
                     channel_multiple=4)
    options = SpaceOptions(min_blocks=1, max_blocks=2, channel_multiple=4)
    assert spec.search_space() == options.space_for(spec.search_space().data)
