"""The `keras-matta` command (also `python -m keras_matta`): argument parsing only.

The work is done by `keras_matta.study.demo.run_demo` and `keras_matta.study.commands`.
Errors in the arguments or the data (a missing file, a malformed file, a width that does not
fit the model) end with a one-line message and exit status 2, never a traceback.
"""

import argparse
import json
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
               "--widths '{\"hidden_1\": 64, \"hidden_2\": 16}' --output mix.keras",
    "evaluate": "examples:\n  keras-matta evaluate --model student.keras --task digits\n"
                "  keras-matta evaluate --model ta.keras --task lm --widths 0.5",
}


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
    """The `keras-matta` argument parser (subcommands demo, train, extract, evaluate)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="keras-matta", description=_DESCRIPTION,
                                     formatter_class=formatter)
    parser.add_argument("--backend", choices=BACKENDS,
                        help="Keras backend to run on (default: $KERAS_BACKEND, else jax)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser("demo", help="run the MatTA study on the embedded data",
                               description=_DEMO, epilog=_EXAMPLES["demo"],
                               formatter_class=formatter)
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

    train = commands.add_parser(
        "train", help="train a MatTA (TA + nested Students) and save the TA",
        description="Trains a TA and its nested Students together (MatTA), optionally with a\n"
                    "Teacher, on an embedded task or your data; saves the TA as .keras and\n"
                    "prints the test metrics of the TA and of every Student.",
        epilog=_EXAMPLES["train"], formatter_class=formatter)
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

    extract = commands.add_parser(
        "extract", help="extract a width of a TA as a standalone stock-Keras model",
        description="Extracts one width, or a per-layer Mix'n'Match spec, of a saved TA as a\n"
                    "model of stock Keras layers (loads without keras_matta) and prints its\n"
                    "parameters and FLOPs.",
        epilog=_EXAMPLES["extract"], formatter_class=formatter)
    extract.add_argument("--model", required=True, help="the TA's .keras file")
    extract.add_argument("--widths", required=True, type=parse_widths,
                         help="a fraction (0.25), an int (units), 'full', or a JSON dict "
                              "{layer_name: spec}")
    extract.add_argument("--output", required=True, help="path of the extracted .keras file")

    evaluate = commands.add_parser(
        "evaluate", help="print a saved model's metrics, parameters and FLOPs",
        description="Evaluates a saved model on a task's split: accuracy and AUC for\n"
                    "classification; bits per byte and final-word accuracy for a byte\n"
                    "language model.",
        epilog=_EXAMPLES["evaluate"], formatter_class=formatter)
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
    return parser


def _switch_backend(backend, argv):
    """Re-runs the command under `backend` when Keras was imported with another one."""
    import keras

    if backend and backend != keras.backend.backend():
        env = {**os.environ, "KERAS_BACKEND": backend}
        os.execve(sys.executable, [sys.executable, "-m", "keras_matta", *argv], env)


def _run(args):
    from keras_matta.study import commands

    if args.command == "demo":
        from keras_matta.study.demo import run_demo

        mode = "quick" if args.quick else "full" if args.full else "default"
        task = args.task or ("digits" if args.quick else "both")
        tasks = ("digits", "lm") if task == "both" else (task,)
        run_demo(tasks=tasks, mode=mode, seeds=args.seeds, output_dir=args.output_dir,
                 cache_dir=args.cache_dir, split=args.split,
                 retrain_teacher=args.retrain_teacher)
        return
    source = TASK_SOURCES.get(getattr(args, "task", None)) or getattr(args, "data", None)
    mode = "quick" if getattr(args, "quick", False) else "default"
    if args.command == "train":
        results = commands.train(
            source, args.output, mode=mode, student_widths=args.student_widths,
            optimizer=args.optimizer, steps=args.steps, batch_size=args.batch_size,
            learning_rate=args.learning_rate, teacher=args.teacher, seed=args.seed)
    elif args.command == "extract":
        results = {"extracted": commands.extract(args.model, args.widths, args.output)}
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
