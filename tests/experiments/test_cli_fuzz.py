"""Property test: random overrides to `plax run` either give a valid config or a clean error
(exit status 2 with a message), never a traceback."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments.cli import _option, build_parser, resolve_run
from experiments.config import ConfigError
from experiments.kinds.classifier import FIELDS, PRESETS
from experiments.kinds.classifier import ClassifierConfig as Config

texts = st.one_of(
    st.text(max_size=12),
    st.integers(-10**6, 10**6).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.lists(st.integers(-5, 600), min_size=0, max_size=4).map(lambda v: ",".join(map(str, v))),
    st.sampled_from(["true", "false", "relu", "adam", "split", "none", "all", "", ","]),
)
options = st.sampled_from([_option(n) for n in FIELDS] + ["--bogus", "--num-task", "-x"])
argv_strategy = st.tuples(
    st.sampled_from([*PRESETS, "nope"]),
    st.lists(st.tuples(options, texts), max_size=5),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(argv_strategy)
def test_random_overrides_give_a_config_or_a_clean_error(tmp_path_factory, case):
    preset, pairs = case
    argv = ["run", preset, "--out", str(tmp_path_factory.mktemp("r"))]
    for opt, value in pairs:
        argv += [opt, value]
    parser = build_parser()
    parser.exit = lambda status=0, message=None: (_ for _ in ()).throw(SystemExit(status))
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:
            return  # main() reports these with the list of valid options (tested in test_cli)
        cfg, _, _ = resolve_run(args)
    except SystemExit as exit_:  # argparse's own clean error
        assert exit_.code == 2
        return
    except ConfigError as err:
        assert str(err)  # a message that names the field
        return
    assert isinstance(cfg, Config)
