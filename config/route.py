"""Print, one per line, the ``--key=value`` arguments that a script accepts.

``run.sh`` forwards its extra arguments through this, so one command line can carry keys for
several scripts while each script stays strict: a key that no script knows is still an error, and
a bad value (``config.checks``) is one before the first step starts.

    python -m config.route train --epochs=3 --interests.stride=2   ->   --epochs=3
"""

import sys

from config import SCRIPTS, ConfigError, load_config, split_argv


def accepted(script: str, argv: list[str]) -> list[str]:
    args = split_argv(argv)
    dataset = [f"--dataset={args['dataset']}"] if "dataset" in args else []
    keep, unknown = [], []
    for key, value in args.items():
        arg = f"--{key}={value}"
        takers = []
        for other in SCRIPTS:
            try:
                load_config(other, [*dataset, arg], validate=False)
                takers.append(other)
            except ConfigError as err:
                if "unknown config key" not in str(err):
                    raise
        if script in takers:
            keep.append(arg)
        elif not takers:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"no script knows the config key(s): {', '.join(unknown)}")
    load_config(script, keep)  # every value checked before run.sh starts the first step
    return keep


if __name__ == "__main__":
    try:
        print("\n".join(accepted(sys.argv[1], sys.argv[2:])))
    except ConfigError as err:
        sys.exit(f"error: {err}")
