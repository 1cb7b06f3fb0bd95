"""What MatTA accepts: argument checks and the split of its targets, with errors that say why."""

import math
import numbers

import keras
from keras import ops

from keras_matta import widths as widths_lib
from keras_matta.layer_width import is_dropped

# Keys of a target dict carrying precomputed teacher outputs, and whether they are logits.
TEACHER_KEYS = {"teacher_logits": True, "teacher_probabilities": False}


def non_negative(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number >= 0; got {value!r}.")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"`{name}` must be a finite number >= 0; got {value}.")
    return float(value)


def positive(name, value):
    value = non_negative(name, value)
    if value == 0:
        raise ValueError(f"`{name}` must be > 0; got {value}.")
    return value


def non_negative_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"`{name}` must be an int >= 0; got {value!r}.")
    return value


def teacher_weight(name, value, has_teacher):
    """A teacher term's weight: 1.0 by default with a teacher, and only 0 without one."""
    if value is None:
        return 1.0 if has_teacher else 0.0
    value = non_negative(name, value)
    if value > 0 and not has_teacher:
        raise ValueError(
            f"`{name}`={value} weights a teacher term but there is no teacher: pass `teacher=` "
            "(a keras.Model or 'dataset') or leave it unset."
        )
    return value


def check_teacher(teacher, model):
    """`(teacher model or None, source)` with source `None`, `"model"` or `"dataset"`."""
    if teacher is None:
        return None, None
    if isinstance(teacher, str):
        if teacher != "dataset":
            raise ValueError(
                f"`teacher` must be None, a keras.Model or 'dataset'; got {teacher!r}."
            )
        return None, "dataset"
    if not isinstance(teacher, keras.Model):
        raise TypeError(
            f"`teacher` must be None, a keras.Model or 'dataset'; got {type(teacher).__name__}."
        )
    if teacher is model:
        raise ValueError("`teacher` must be a separate model, not the TA itself.")
    try:
        t_shape, a_shape = tuple(teacher.output_shape), tuple(model.output_shape)
    except (AttributeError, ValueError, TypeError):
        t_shape = a_shape = None  # Unbuilt or subclassed: checked on the first batch instead.
    if t_shape is not None and t_shape[1:] != a_shape[1:]:
        raise ValueError(
            f"`teacher` '{teacher.name}' outputs shape {t_shape} but the TA '{model.name}' "
            f"outputs {a_shape}: the teacher must predict the same classes (vocabulary)."
        )
    # Frozen: no gradients, no optimizer slots (and no autograd graph on torch).
    teacher.trainable = False
    return teacher, "model"


def check_student_widths(model, student_widths):
    """`(specs, labels, sizes)`; sizes order the Students for the sandwich strategy."""
    if not isinstance(student_widths, (list, tuple)) or not student_widths:
        raise ValueError(
            "`student_widths` must be a non-empty list of width specs (fractions, ints or "
            f"{{layer_name: spec}} dicts); got {student_widths!r}."
        )
    specs, labels, sizes, seen = [], [], [], {}
    for i, spec in enumerate(student_widths):
        try:
            resolved = widths_lib.resolve_widths(model, spec)
        except (ValueError, TypeError) as error:
            raise type(error)(f"`student_widths[{i}]`={spec!r} is invalid: {error}") from error
        if widths_lib.is_full_width(resolved):
            full = {layer.name: layer.nested_dims() for layer in resolved}
            raise ValueError(
                f"`student_widths[{i}]`={spec!r} resolves to the full (TA) width of every Mat "
                f"layer ({full}); a Student must be narrower than the TA in some layer."
            )
        key = tuple((layer.name, tuple(sorted(w.items()))) for layer, w in resolved.items())
        if key in seen:
            raise ValueError(
                f"`student_widths[{i}]`={spec!r} selects the same widths as "
                f"`student_widths[{seen[key]}]`={student_widths[seen[key]]!r}."
            )
        seen[key] = i
        # Size: the mean fraction of the full width over every nested dimension (0: dropped).
        fractions = [
            0.0 if is_dropped(w) else w[d] / layer.nested_dims()[d]
            for layer, w in resolved.items() for d in layer.nested_dims()
        ]
        specs.append(spec)
        labels.append(widths_lib.width_label(spec))
        sizes.append(sum(fractions) / max(len(fractions), 1))
    return specs, labels, sizes


def check_student_weights(student_weights, count):
    if student_weights is None:
        return [1.0] * count
    if not isinstance(student_weights, (list, tuple)) or len(student_weights) != count:
        raise ValueError(
            f"`student_weights` must be a list with one weight per Student width ({count}); "
            f"got {student_weights!r}."
        )
    return [non_negative(f"student_weights[{i}]", w) for i, w in enumerate(student_weights)]


def split_targets(y, sample_weight, teacher_source):
    """`(labels, teacher outputs or None, teacher_from_logits, sample_weight)`."""
    teacher_outputs = teacher_from_logits = None
    if isinstance(y, dict) and ("labels" in y or set(y) & set(TEACHER_KEYS)):
        keys = sorted(set(y) & set(TEACHER_KEYS))
        if set(y) - {"labels", *TEACHER_KEYS} or "labels" not in y or len(keys) != 1:
            raise ValueError(
                "Targets with precomputed teacher outputs must be a dict with 'labels' and "
                f"exactly one of {sorted(TEACHER_KEYS)}; got keys {sorted(y)}."
            )
        if teacher_source != "dataset":
            raise ValueError(
                f"The targets carry '{keys[0]}' but MatTA was built with "
                f"teacher={teacher_source!r}: pass teacher='dataset'."
            )
        teacher_outputs = ops.stop_gradient(ops.convert_to_tensor(y[keys[0]]))
        teacher_from_logits = TEACHER_KEYS[keys[0]]
        y = y["labels"]
    elif teacher_source == "dataset":
        raise ValueError(
            "MatTA was built with teacher='dataset': the targets must be a dict "
            "{'labels': y, 'teacher_logits': t} (or 'teacher_probabilities')."
        )
    if isinstance(sample_weight, dict):
        # Keras' array adapter gives dict targets one weight per key (a 1-D array is
        # replicated; per-token weights must be given so). The labels' weights weight every term.
        if "labels" not in sample_weight:
            raise ValueError(
                "With dict targets, `sample_weight` must be one array or a dict with a "
                f"'labels' entry; got keys {sorted(sample_weight)}."
            )
        sample_weight = sample_weight["labels"]
    return y, teacher_outputs, teacher_from_logits, sample_weight


def check_teacher_outputs(teacher_outputs, ta_outputs, source):
    t_shape, a_shape = tuple(teacher_outputs.shape), tuple(ta_outputs.shape)
    if len(t_shape) != len(a_shape) or any(
        t is not None and a is not None and t != a for t, a in zip(t_shape, a_shape)
    ):
        raise ValueError(
            f"The {source} have shape {t_shape} but the TA's outputs have shape {a_shape}: "
            "the teacher must predict the same classes (vocabulary) at the same positions."
        )


def single_output(outputs, who):
    if isinstance(outputs, (list, tuple, dict)):
        raise ValueError(
            f"MatTA needs a model with a single output tensor; {who} returned "
            f"{type(outputs).__name__} of {len(outputs)} outputs."
        )
    return outputs
