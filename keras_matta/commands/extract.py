"""`keras-matta extract`: one width, or Mix'n'Match spec, of a saved TA as a stock-Keras model."""


import keras_matta
from keras_matta.commands import common


def extract(model_path, widths, output):
    """Extracts `widths` from the saved TA at `model_path`; saves it; returns its cost."""
    output = common.keras_output(output)
    model = common.load_model(model_path)
    student = keras_matta.extract(model, widths)
    output.parent.mkdir(parents=True, exist_ok=True)
    student.save(output)
    print(f"Saved {student.name} to {output}.")
    return keras_matta.cost(model, widths)
