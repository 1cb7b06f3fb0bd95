"""The demo study: the MatTA paper's comparison at small scale, on the embedded data.

- `config`: model sizes, budgets and Mix'n'Match families per task (`quick`/`default`/`full`);
- `models`: the Teacher, the TA (Student nested inside) and the lone Student;
- `distiller`: classic knowledge distillation, the baseline;
- `runs`: the training runs (cached Teacher, Student alone, KD, MatTA; Adam and Shampoo);
- `metrics`: accuracy/AUC, bits per byte, final-word accuracy;
- `report`: aggregation over seeds, tables, plot, JSON;
- `demo`: `run_demo`, what `keras-matta demo` runs.
"""
