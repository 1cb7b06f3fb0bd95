"""Argument checks shared by the layout functions (internal): errors name the argument and value."""

import re

import keras


def check_mesh(device_mesh, arg):
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise TypeError(
            f"`{arg}` must be a keras.distribution.DeviceMesh; got {type(device_mesh).__name__}."
        )


def check_axis(arg, axis, device_mesh):
    if axis not in device_mesh.axis_names:
        raise ValueError(
            f"`{arg}` must be one of the mesh's axis names {list(device_mesh.axis_names)}; "
            f"got {arg}={axis!r}."
        )


def check_patterns(arg, patterns):
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns or ()):
        raise TypeError(
            f"`{arg}` must be a list of regular-expression strings (layer names); "
            f"got {arg}={patterns!r}."
        )
    for pattern in patterns or ():
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"`{arg}` has an invalid regular expression {pattern!r}: {error}."
            ) from error
    return list(patterns or ())


def axis_size(device_mesh, axis):
    return int(device_mesh.shape[list(device_mesh.axis_names).index(axis)])
