"""The `keras-matta` command (also `python -m keras_matta`): argument parsing only.

The work is done by `keras_matta.commands` (train, extract, evaluate, search) and by
`keras_matta.study.demo.run_demo` (demo). Errors in the arguments or the data (a missing file,
a malformed file, a width that does not fit the model) end with a one-line message and exit
status 2, never a traceback.
"""

import argparse
import json
import math
import os
import sys

BACKENDS = ("jax", "tensorflow", "torch")
TASK_SOURCES = {"digits": "digits", "lm": "shakespeare"}

_DESCRIPTION = """\
MatTA for Keras 3: train a Teacher -> TA -> Student family of nested models in one run, then
extract any width (or a per-layer Mix'n'Match) as a standalone stock-Keras model.

The Keras backend is the KERAS_BACKEND environment variable (jax, tensorflow or torch), or
--backend, which restarts the command under that backend."""

_DEMO = """\
Runs the paper's study at small scale on the embedded data (no network):
  digits  an MLP on 5,000 real MNIST digits (accuracy, AUC);
  lm      a byte-level transformer on Shakespeare, whole plays held out (bits per byte,
          LAMBADA-style final-word accuracy).
For each task: a Teacher trained once and cached (--cache-dir); then, with Adam and with
Shampoo, the Student alone, the Student distilled from the Teacher, and MatTA (TA + Student
trained together); the Mix'n'Match family extracted from the MatTA TA. Every model is evaluated
on the test split with its parameters and FLOPs. Writes results.json and quality_vs_params.png
to --output-dir and prints the tables.

Budgets (2 CPU cores, JAX backend): default about 10 minutes (both tasks, first run included);
--quick about 1-2 minutes (digits only unless --task is given; numbers are a smoke test);
--full is the real study: longer training, seeds 0 1 2, mean and spread (tens of minutes)."""

_EXAMPLES = {
    "demo": "examples:\n  keras-matta demo\n  keras-matta demo --quick\n"
            "  keras-matta demo --full --task lm --output-dir results/",
    "train": "examples:\n  keras-matta train --task digits --output ta.keras\n"
             "  keras-matta train --data my_data.npz --student-widths 0.25 0.5 "
             "--optimizer adam --output ta.keras",
    "extract": "examples:\n  keras-matta extract --model ta.keras --widths 0.25 "
               "--output student.keras\n  keras-matta extract --model ta.keras "
               "--widths '{\"hidden_1\": 64, \"hidden_2\": 16}' --output mix.keras\n"
               "  keras-matta extract --model ta.keras --point matta_search/front.json:2 "
               "--output student.keras",
    "evaluate": "examples:\n  keras-matta evaluate --model student.keras --task digits\n"
                "  keras-matta evaluate --model ta.keras --task lm --widths 0.5",
    "search": "examples:\n  keras-matta search --model ta.keras --task digits --budget params=60k\n"
              "  keras-matta search --model ta.keras --task lm --budget latency_ms=5 "
              "--choices 0.25 0.5 0.75 1\n"
              "  keras-matta search --model ta.keras --task lm --budget peak_memory_mb=2 "
              "--proxy sensitivity\n"
              "  keras-matta extract --model ta.keras --point matta_search/front.json:2 "
              "--output student.keras",
}

_SEARCH = """\
Searches the per-layer width specs of a saved TA (every nested layer at one of --choices,
independently: Mix'n'Match) for the Pareto front of quality against cost under a budget.
Quality is measured on the validation split (accuracy for classification, bits per byte for a
byte language model); cost is params, flops, peak_memory_mb (counted; the memory of one
served batch: weights and the largest set of live activations) or latency_ms (the extracted
model's median time per batch on this backend). Small spaces are searched exhaustively, large
ones by a seeded evolutionary search. With --drop-blocks each transformer block may also be
dropped (elastic depth), so the front trades depth as well as width. Prints the front as a table
and writes front.json and front.png (quality against cost, the uniform widths marked) to
--output-dir. Every measurement is appended to --output-dir/cache.jsonl: interrupt with Ctrl-C
and run the same command again to resume."""


def parse_widths(text):
    """A width spec from the command line: a float, an int, a JSON dict, or `full`."""
    text = text.strip()
    if text.lower() in ("full", "none"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(
            f"invalid width spec {text!r}: use a fraction (0.25), an int (64), 'full' or a "
            "JSON dict such as '{\"hidden_1\": 0.5}'"
        ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float, dict)):
        raise argparse.ArgumentTypeError(
            f"invalid width spec {text!r}: expected a number, 'full' or a JSON dict"
        )
    return value


def _positive(convert, noun):
    """An argparse `type` accepting `convert(text) > 0`, with a one-line error naming `noun`."""

    def parse(text):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {noun}; got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {noun}; got {value}")
        return value

    return parse


_positive_int = _positive(int, "integer")
_positive_float = _positive(float, "number")


def _data_arguments(parser, required_help):
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--task", choices=sorted(TASK_SOURCES),
                       help="an embedded task: digits (MNIST 5k) or lm (Shakespeare bytes)")
    group.add_argument("--data", metavar="PATH_OR_NAME",
                       help=f"{required_help}: a .npz (x, y or x_train, y_train, x_test, "
                            "y_test), a .csv (features then an integer label per row, no "
                            "header), a .txt (text for a byte language model) or "
                            "tfds:<name> (TensorFlow Datasets; downloads)")


def build_parser():
    """The `keras-matta` argument parser (subcommands demo, train, extract, evaluate, search)."""
    from keras_matta.study.config import METHODS

    formatter = argparse.RawDescriptionHelpFormatter
    # No abbreviations: `--mode quick` would silently read as `--model quick`.
    parser = argparse.ArgumentParser(prog="keras-matta", description=_DESCRIPTION,
                                     formatter_class=formatter, allow_abbrev=False)
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend to run on (default: $KERAS_BACKEND, else jax)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(name, help, description):
        """The subcommand `name`; its --help ends with its `_EXAMPLES`."""
        return commands.add_parser(name, help=help, description=description,
                                   epilog=_EXAMPLES[name], formatter_class=formatter,
                                   allow_abbrev=False)

    demo = command("demo", help="run the MatTA study on the embedded data", description=_DEMO)
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true",
                      help="tiny models and budgets: a smoke test of the whole pipeline")
    size.add_argument("--full", action="store_true",
                      help="the real study: longer training, 3 seeds (mean and spread)")
    demo.add_argument("--task", choices=("digits", "lm", "both"), default=None,
                      help="which task(s) to run (default: both; digits with --quick)")
    demo.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                      help="seeds of the Student/TA runs (default: 0; with --full: 0 1 2)")
    demo.add_argument("--output-dir", default="matta_demo",
                      help="where results.json and quality_vs_params.png go "
                           "(default: ./matta_demo)")
    demo.add_argument("--cache-dir", default=None,
                      help="where trained Teachers are cached (default: $KERAS_MATTA_CACHE, "
                           "else ~/.cache/keras_matta)")
    demo.add_argument("--split", choices=("test", "validation"), default="test",
                      help="split to evaluate on (default: test; use validation to tune)")
    demo.add_argument("--retrain-teacher", action="store_true",
                      help="train the Teacher again even if a cached one exists")
    demo.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS,
                      help="which methods to run (default: all); merge a partial run into a "
                           "full one with `python -m keras_matta.study.report --replace`")

    train = command(
        "train", help="train a MatTA (TA + nested Students) and save the TA",
        description="Trains a TA and its nested Students together (MatTA), optionally with a\n"
                    "Teacher, on an embedded task or your data; saves the TA as .keras and\n"
                    "prints the test metrics of the TA and of every Student.")
    _data_arguments(train, "your data")
    train.add_argument("--output", required=True, help="path of the TA's .keras file")
    train.add_argument("--student-widths", type=parse_widths, nargs="+", metavar="WIDTHS",
                       help="width specs of the Students: fractions, ints or JSON dicts "
                            "(default: 0.25)")
    train.add_argument("--optimizer", choices=("shampoo", "adam"), default="shampoo",
                       help="optimizer (default: shampoo, grafted onto Adam)")
    train.add_argument("--teacher", metavar="MODEL.keras",
                       help="a trained Teacher with the TA's output shape (default: none)")
    train.add_argument("--steps", type=_positive_int, help="training steps (default: preset)")
    train.add_argument("--batch-size", type=_positive_int, help="batch size (default: 64/32)")
    train.add_argument("--learning-rate", type=_positive_float,
                       help="peak learning rate (default: 1e-3 MLP, 3e-3 transformer)")
    train.add_argument("--quick", action="store_true", help="the demo's tiny preset")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")

    extract = command(
        "extract", help="extract a width of a TA as a standalone stock-Keras model",
        description="Extracts one width, or a per-layer Mix'n'Match spec, of a saved TA as a\n"
                    "model of stock Keras layers (loads without keras_matta) and prints its\n"
                    "parameters and FLOPs.")
    extract.add_argument("--model", required=True, help="the TA's .keras file")
    which = extract.add_mutually_exclusive_group(required=True)
    which.add_argument("--widths", type=parse_widths,
                       help="a fraction (0.25), an int (units), 'full', or a JSON dict "
                            "{layer_name: spec}")
    which.add_argument("--point", metavar="FRONT.json[:INDEX]",
                       help="a point of a `keras-matta search` front: its JSON file and the "
                            "point's # in the table (default: the best, the last)")
    extract.add_argument("--output", required=True, help="path of the extracted .keras file")

    evaluate = command(
        "evaluate", help="print a saved model's metrics, parameters and FLOPs",
        description="Evaluates a saved model on a task's split: accuracy and AUC for\n"
                    "classification; bits per byte and final-word accuracy for a byte\n"
                    "language model.")
    evaluate.add_argument("--model", required=True, help="a .keras model")
    _data_arguments(evaluate, "the data to evaluate on")
    evaluate.add_argument("--split", choices=("test", "validation"), default="test",
                          help="split to evaluate (default: test)")
    evaluate.add_argument("--widths", type=parse_widths,
                          help="evaluate the model (a TA) at this width spec")
    evaluate.add_argument("--quick", action="store_true",
                          help="evaluate fewer language-model windows")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="the data split seed used in training (default: 0)")

    search = command(
        "search", help="find the best width specs of a TA under a budget (Pareto front)",
        description=_SEARCH)
    search.add_argument("--model", required=True, help="the TA's .keras file")
    _data_arguments(search, "the data to search on")
    search.add_argument("--budget", type=parse_budget,
                        help="a bound on one cost: params=2M, flops=500k, peak_memory_mb=4 or "
                             "latency_ms=1.5 (default: none, the whole front)")
    search.add_argument("--objective",
                        help="a metric: accuracy or loss (classification), bits_per_byte or "
                             "loss (language model); default: accuracy / bits_per_byte")
    search.add_argument("--choices", type=parse_widths, nargs="+", metavar="WIDTH",
                        help="the widths every nested layer may take (default: 0.25 0.5 0.75 "
                             "1); the Students' trained widths and 1 mix trained ones only")
    search.add_argument("--drop-blocks", action="store_true",
                        help="also let every transformer block be dropped (elastic depth: "
                             "the front trades depth as well as width)")
    search.add_argument("--strategy", choices=("auto", "exhaustive", "evolutionary"),
                        default="auto",
                        help="exhaustive up to --max-evaluations candidates, else evolutionary "
                             "(default: auto)")
    search.add_argument("--max-evaluations", type=_positive_int, default=200,
                        help="the most candidates the evolutionary search measures (default: "
                             "200)")
    search.add_argument("--proxy", choices=("subset", "sensitivity"),
                        help="rank candidates cheaply, then confirm the front on all the data: "
                             "subset (each on --proxy-steps batches) or sensitivity (predicted "
                             "from each layer's narrowings alone; a few exact evaluations per "
                             "cost range); default: none, or subset with --proxy-steps")
    search.add_argument("--proxy-steps", type=_positive_int,
                        help="the batches a proxy ranks or calibrates on")
    search.add_argument("--batch-size", type=_positive_int,
                        help="evaluation batch, and the batch latency is timed and the peak "
                             "memory counted at (default: 64 MLP, 32 transformer)")
    search.add_argument("--split", choices=("validation", "test"), default="validation",
                        help="split to search on (default: validation)")
    search.add_argument("--output-dir", default="matta_search",
                        help="where front.json, front.png and cache.jsonl go (default: "
                             "./matta_search)")
    search.add_argument("--restart", action="store_true",
                        help="discard the measurements of an earlier run in --output-dir")
    search.add_argument("--quick", action="store_true",
                        help="evaluate fewer language-model windows")
    search.add_argument("--seed", type=int, default=0,
                        help="seeds the evolutionary search (default: 0)")
    search.add_argument("--data-seed", type=int, default=0,
                        help="the data split seed used in training (default: 0)")
    return parser


def parse_budget(text):
    """`"params=2M"` -> `{"params": 2000000.0}`: a cost, `=`, a number with an optional k/M/G."""
    name, sep, value = str(text).partition("=")
    scale = {"k": 1e3, "m": 1e6, "g": 1e9}.get(value[-1:].lower(), 1.0)
    number = value[:-1] if scale != 1.0 else value
    try:
        bound = float(number) * scale
    except ValueError:
        bound = math.nan
    if not sep or not name.strip() or not bound > 0:
        raise argparse.ArgumentTypeError(
            f"invalid budget {text!r}: use COST=NUMBER, such as params=2M, flops=500k, "
            "peak_memory_mb=4 or latency_ms=1.5")
    return {name.strip(): bound}


def _switch_backend(backend, argv):
    """Re-runs the command under `backend` when Keras was imported with another one."""
    import keras

    if backend and backend != keras.backend.backend():
        env = {**os.environ, "KERAS_BACKEND": backend}
        os.execve(sys.executable, [sys.executable, "-m", "keras_matta", *argv], env)


def _run(args):
    from keras_matta import commands

    if args.command == "demo":
        from keras_matta.study.demo import run_demo

        mode = "quick" if args.quick else "full" if args.full else "default"
        task = args.task or ("digits" if args.quick else "both")
        tasks = ("digits", "lm") if task == "both" else (task,)
        run_demo(tasks=tasks, mode=mode, seeds=args.seeds, output_dir=args.output_dir,
                 cache_dir=args.cache_dir, split=args.split,
                 retrain_teacher=args.retrain_teacher, methods=tuple(args.methods))
        return
    source = TASK_SOURCES.get(getattr(args, "task", None)) or getattr(args, "data", None)
    mode = "quick" if getattr(args, "quick", False) else "default"
    if args.command == "train":
        results = commands.train(
            source, args.output, mode=mode, student_widths=args.student_widths,
            optimizer=args.optimizer, steps=args.steps, batch_size=args.batch_size,
            learning_rate=args.learning_rate, teacher=args.teacher, seed=args.seed)
    elif args.command == "extract":
        widths = args.widths
        if args.point is not None:
            from keras_matta.search import report

            widths = report.read_point(args.point)
        results = {"extracted": commands.extract(args.model, widths, args.output)}
    elif args.command == "search":
        commands.search(
            args.model, source, args.output_dir, budget=args.budget, objective=args.objective,
            choices=args.choices, strategy=args.strategy, max_evaluations=args.max_evaluations,
            seed=args.seed, proxy=args.proxy, proxy_steps=args.proxy_steps,
            batch_size=args.batch_size,
            split=args.split, mode=mode, data_seed=args.data_seed, resume=not args.restart,
            drop_blocks=args.drop_blocks)
        return
    else:
        results = {args.model: commands.evaluate(args.model, source, split=args.split,
                                                 widths=args.widths, mode=mode, seed=args.seed)}
    _print_results(results)


def _print_results(results):
    for name, values in results.items():
        parts = [f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                 for key, value in values.items()]
        print(f"{name}: " + ", ".join(parts))


def main(argv=None):
    """Entry point of `keras-matta`; returns the exit status (2 for bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)  # usage errors exit with status 2
    _switch_backend(args.backend, argv)
    try:
        _run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        print(f"keras-matta {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("keras-matta: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
