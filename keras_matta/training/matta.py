"""MatTA: a Teaching Assistant and its nested Students, trained together with distillation."""

import random

import keras
import numpy as np
from keras import ops

from keras_matta import distribution as distribution_lib
from keras_matta import losses as losses_lib
from keras_matta import widths as widths_lib
from keras_matta.training import checks
from keras_matta.training import dispatch
from keras_matta.training import sampled_widths
from keras_matta.training import shared_weights
from keras_matta.training.objective import CompiledObjective
from keras_matta.training.strategies import WidthSampler


class _StepState:
    """Python state Keras must neither track nor save (plain object: no auto-tracking)."""

    def __init__(self, teacher):
        self.teacher = teacher  # a frozen keras.Model, or None
        self.students = None  # Student indices of the step being traced; None: all
        self.optimizer_mapping = None  # JAX: (variable, traced value) pairs of the optimizer
        self.train_functions = {}  # configuration -> compiled train function
        self.next_step = 0
        self.compiled = None  # a CompiledObjective, set by compile()
        self.compile_args = {}  # the arguments of compile(), for get_compile_config()
        self.trackers = {}  # (head, term) -> keras.metrics.Mean
        self.training = True  # whether the step being traced (or run) is a training step
        self.shared_variables = None  # detach_shared: the TA's un-nested variables, found once


@keras.saving.register_keras_serializable(package="keras_matta")
class MatTA(keras.Model):
    """Trains a TA (a model of Mat layers at full width) and its nested Students in one run.

    For a batch `(x, y)`, the TA logits `z_A = M(x)`, Student logits `z_S,i = M(x; width_i)`
    (the same kernels, sliced) and teacher outputs `z_T` (optional, never trained):

        L = beta * task(y, z_A) + beta_teacher * KD_tau(z_T -> z_A)
          + sum_i w_i * [ alpha * task(y, z_S,i)
                        + gamma(t) * KD_tau(sg?(z_A) -> z_S,i)
                        + alpha_teacher * KD_tau(z_T -> z_S,i) ]
        KD_tau(p -> q) = tau^2 * KL(softmax(p / tau) || softmax(q / tau))
        gamma(t) = gamma * min(1, t / kd_warmup_steps)     (t: the optimizer's iterations)

    `task` is the loss given to `compile`; KD is chosen from it (`distillation="auto"`):
    categorical cross-entropies use the softmax KL above, binary ones the Bernoulli KL of
    sigmoid outputs, regression losses the MSE between outputs (no temperature). `sg?` is a
    stop-gradient when `detach_ta=True`. One backward pass, one optimizer step per batch.
    Sample weights (e.g. a padding mask of shape `(batch, seq)` for token-level language
    modelling) weight every term, so masked positions contribute nothing; reductions are Keras'
    `"sum_over_batch_size"`. (With NumPy inputs and dict targets, Keras takes per-token weights
    only as a dict with the targets' keys; MatTA uses its `"labels"` entry. Datasets may yield
    `(x, y, weights)` directly.)

    The teacher signal is a frozen `keras.Model` (called with `training=False`, set
    `trainable=False`, kept out of `trainable_weights` and out of the saved TA; the MatTA's own
    `.keras` file stores it, config and weights, so a checkpoint resumes), precomputed outputs in
    the targets (`teacher="dataset"`, `y = {"labels": y, "teacher_logits": t}` or
    `"teacher_probabilities"`), or none.

    `history.history` holds `loss` (the weighted total), every compiled metric per head
    (`ta_accuracy`, `student_0.25_accuracy`, ...) and every unweighted term
    (`ta_task_loss`, `ta_kd_teacher_loss`, `student_0.25_task_loss`,
    `student_0.25_kd_ta_loss`, `student_0.25_kd_teacher_loss`). `evaluate()` runs every
    Student and weights the TA->Student term with the full `gamma` (the warm-up is a training
    schedule). `predict()` returns the TA's outputs; predict a Student with
    `with keras_matta.WidthScope(mat_ta.model, spec): mat_ta.model.predict(x)` or extract it.

    Args:
        model: a `keras.Model` containing Mat layers, single output: the TA.
        student_widths: a list of width specs (fractions, ints, Mix'n'Match dicts), each
            narrower than the TA in at least one layer.
        teacher: `None`, a `keras.Model` with the TA's output shape, or `"dataset"`.
        beta: weight of the TA's task loss. Defaults to 1.0. Larger values trade the
            narrower members for the TA: on the byte LM without a Teacher, `beta=8` takes the
            TA from +0.098 to +0.040 bits/byte against its separate model and the 0.25 Student
            from +0.022 to +0.081 (3 seeds; README, "The recipe"). Raise it to serve the TA.
        alpha: weight of each Student's task loss. Defaults to 1.0.
        gamma: weight of TA->Student distillation after warm-up. Defaults to 1.0.
        beta_teacher: weight of Teacher->TA distillation; defaults to 1.0 with a teacher and
            must be 0 without one.
        alpha_teacher: weight of Teacher->Student distillation; same default as `beta_teacher`.
        temperature: `tau > 0` of the KL terms. Defaults to 1.0: the KL between the served
            distributions; the `tau^2` factor keeps gradients comparable at other values.
        kd_warmup_steps: optimizer steps over which `gamma(t)` ramps from 0 to `gamma`
            (0: no warm-up). Defaults to 0.
        student_weights: `w_i`, one non-negative number per Student. Defaults to 1.0 each.
        detach_ta: whether the TA->Student term stops gradients into the TA's logits.
            Defaults to `True` (the usual online-distillation choice).
        detach_shared: whether only the TA's terms train the weights no width slices (the
            trainable variables outside every Mat layer: embeddings, norms and output layers
            between them; `keras_matta.training.shared_variables`). The narrower members'
            terms then train only the Mat layers. Defaults to False: on the byte LM it
            trades like a larger `beta` (TA +0.115 -> +0.103 bits/byte against its separate
            model, the 0.25 Student +0.021 -> +0.037; README, "The recipe").
        strategy: which Students run on a training step: `"all"` (default), `"sandwich"`
            (largest, smallest and `num_random_widths` others) or `"random"`. One compiled train
            function is cached per configuration of Students; with `steps_per_execution=N` the
            configuration is drawn once per execution of N steps.
        num_random_widths: how many Students `"sandwich"` adds to the largest and smallest
            (default 1, so with three Students `"sandwich"` runs all three, like `"all"`), or
            `"random"` draws (default 1). See `keras_matta.training.WidthSampler`.
        num_sampled_widths: sub-networks added on every training step at widths drawn afresh,
            per layer and dimension, uniformly between the smallest Student's width and the full
            width (`keras_matta.training.WidthDraws`); each adds the Student terms with weight
            1, logged as `sampled_*_loss` (training only). They train the widths between the
            Students and the per-layer mixes, which are otherwise never trained. They run as
            masks (full-width FLOPs, one compiled step for every draw).
        sampled_width_distribution: how those widths are drawn, per layer and dimension:
            `"range"` (default; uniformly between the smallest Student's width and the full
            width), `"granularities"` (one of the Students' widths or the full width, as
            MatFormer's Mix'n'Match) or `"either"` (a fair coin between the two). Drawing the
            per-layer mixes of trained widths more often did not make them better: on the
            byte LM `"either"` left them where they were (+0.005 bits/byte) and every other
            member 0.01 behind `"range"`; on digits neither beat it (3 seeds; README, "The
            recipe").
        seed: int seeding the Student draw of step `t` (a function of `(seed, t)`); `None` draws
            one from Python's `random` (so `keras.utils.set_random_seed` fixes it).
        distillation: `"auto"`, `"kl"`, `"bernoulli_kl"` or `"mse"`.
        name, **kwargs: as for `keras.Model`.

    Example:

    ```python
    x = np.random.rand(64, 32).astype("float32")
    y = np.random.randint(0, 10, size=(64,))
    ta = keras.Sequential([keras.Input((32,)), keras_matta.MatDense(256, activation="relu"),
                           keras_matta.MatDense(10, nested=False)])
    mat_ta = keras_matta.MatTA(ta, student_widths=[0.25, 0.5], kd_warmup_steps=100)
    mat_ta.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                   metrics=["accuracy"])
    history = mat_ta.fit(x, y, batch_size=16, epochs=1, verbose=0)
    # history.history: loss, ta_accuracy, student_0.25_accuracy, student_0.5_accuracy,
    # ta_task_loss, student_0.25_task_loss, student_0.25_kd_ta_loss, ...
    mat_ta.model.save("ta.keras")                 # the TA; every Student is a width of it
    student = keras_matta.extract(mat_ta, 0.25)   # a stock model with 64 hidden units
    ```

    Reference:
        Verma et al., "Matryoshka Model Learning for Improved Elastic Student Models",
        KDD 2025 (arXiv 2505.23337).
    """

    def __init__(self, model, student_widths, teacher=None, beta=1.0, alpha=1.0, gamma=1.0,
                 beta_teacher=None, alpha_teacher=None, temperature=1.0, kd_warmup_steps=0,
                 student_weights=None, detach_ta=True, detach_shared=False, strategy="all",
                 num_random_widths=None, num_sampled_widths=1,
                 sampled_width_distribution="range", seed=None, distillation="auto",
                 name="matta", **kwargs):
        super().__init__(name=name, **kwargs)
        # === Models ===
        if not isinstance(model, keras.Model):
            raise TypeError(f"`model` must be a keras.Model; got {type(model).__name__}.")
        if not widths_lib.mat_layers(model):
            raise ValueError(
                f"`model` ('{model.name}') has no Mat layer (MatDense, MatTransformerBlock, ...): "
                "MatTA trains nested widths of Mat layers."
            )
        self.model = model
        teacher_model, self.teacher_source = checks.check_teacher(teacher, model)
        # Held outside Keras' tracking: the teacher is no sublayer, so its variables are in
        # neither `trainable_weights` nor the TA. (Saving still visits the `teacher` property.)
        self._state = _StepState(teacher_model)

        # === Students ===
        self._student_widths, self.student_labels, sizes = checks.check_student_widths(
            model, student_widths
        )
        self.student_weights = checks.check_student_weights(student_weights, len(sizes))
        seed = random.randrange(2**31) if seed is None else seed
        self._sampler = WidthSampler(strategy, sizes, num_random_widths, seed)
        self.num_sampled_widths = checks.non_negative_int("num_sampled_widths",
                                                          num_sampled_widths)
        self.sampled_width_distribution = sampled_widths.check_distribution(
            sampled_width_distribution)
        self._width_draws = None
        if self.num_sampled_widths:
            self._width_draws = sampled_widths.WidthDraws(model, self._student_widths,
                                                          sampled_width_distribution)
            # Its state is saved with the model (`save_own_variables`), so a resumed run goes on
            # drawing what the uninterrupted run would have drawn.
            self._width_seeds = keras.random.SeedGenerator(seed, name="width_draws")

        # === Objective ===
        has_teacher = self.teacher_source is not None
        self.beta = checks.non_negative("beta", beta)
        self.alpha = checks.non_negative("alpha", alpha)
        self.gamma = checks.non_negative("gamma", gamma)
        self.beta_teacher = checks.teacher_weight("beta_teacher", beta_teacher, has_teacher)
        self.alpha_teacher = checks.teacher_weight("alpha_teacher", alpha_teacher, has_teacher)
        self.temperature = checks.positive("temperature", temperature)
        self.kd_warmup_steps = checks.non_negative_int("kd_warmup_steps", kd_warmup_steps)
        if not isinstance(detach_ta, bool):
            raise TypeError(f"`detach_ta` must be a bool; got {detach_ta!r}.")
        self.detach_ta = detach_ta
        if not isinstance(detach_shared, bool):
            raise TypeError(f"`detach_shared` must be a bool; got {detach_shared!r}.")
        self.detach_shared = detach_shared
        if distillation != "auto" and distillation not in losses_lib.DISTILLATIONS:
            raise ValueError(
                f"`distillation` must be 'auto' or one of {sorted(losses_lib.DISTILLATIONS)}; "
                f"got {distillation!r}."
            )
        self.distillation = distillation

        # === Loss-term trackers (logged unweighted) ===
        sampled = ["sampled"] if self.num_sampled_widths else []
        for head in self.head_names + sampled:
            terms = ["task"] + (["kd_ta"] if head != "ta" else [])
            terms += ["kd_teacher"] if has_teacher else []
            for term in terms:
                self._state.trackers[(head, term)] = keras.metrics.Mean(
                    name=f"{head}_{term}_loss"
                )

    # === Properties ===

    @property
    def student_widths(self):
        return list(self._student_widths)

    @property
    def head_names(self):
        """`"ta"` then `"student_<label>"` per Student: the prefixes of the logged names."""
        return ["ta"] + [f"student_{label}" for label in self.student_labels]

    @property
    def teacher(self):
        """The frozen teacher model, or `None` (no teacher, or teacher outputs in the data)."""
        return self._state.teacher

    @property
    def strategy(self):
        return self._sampler.strategy

    @property
    def seed(self):
        return self._sampler.seed

    @property
    def metrics(self):
        # Own order: total loss, compiled metrics per head, then the loss terms.
        metrics = [self._loss_tracker] if self.compiled and self._loss_tracker else []
        if self._state.compiled is not None:
            metrics.extend(self._state.compiled.metrics())
        return metrics + list(self._state.trackers.values())

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    # === Compilation ===

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, weighted_metrics=None,
                **kwargs):
        """Like `keras.Model.compile`; `loss` is the task loss of the TA and every Student.

        `metrics` and `weighted_metrics` are tracked for every head (`ta_<name>`,
        `student_<label>_<name>`); `"accuracy"` resolves from the task loss (for binary
        logits the threshold is 0).
        """
        if loss is None:
            raise ValueError("MatTA.compile needs `loss`: the task loss of the TA and Students.")
        if kwargs.get("loss_weights") is not None:
            raise ValueError(
                "MatTA does not take `loss_weights`: weight the terms with `beta`, `alpha`, "
                "`gamma`, `beta_teacher`, `alpha_teacher` and `student_weights`."
            )
        self._state.compiled = CompiledObjective(
            loss, metrics, weighted_metrics, self.head_names, self.distillation,
            self.temperature,
        )
        super().compile(optimizer=optimizer, loss=None, **kwargs)
        self._state.compile_args = dict(optimizer=optimizer, loss=loss, metrics=metrics,
                                        weighted_metrics=weighted_metrics, **kwargs)

    def get_compile_config(self):
        if not self.compiled:
            return {}
        return {k: keras.saving.serialize_keras_object(v)
                for k, v in self._state.compile_args.items()}

    def compile_from_config(self, config):
        self.compile(**{k: keras.saving.deserialize_keras_object(v) for k, v in config.items()})
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # === The objective ===

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        compiled = self._state.compiled
        self._state.training = bool(training)
        if compiled is None:
            raise ValueError("Call `MatTA.compile(optimizer, loss, ...)` before training.")
        labels, teacher_outputs, teacher_from_logits, sample_weight = checks.split_targets(
            y, sample_weight, self.teacher_source
        )
        if y_pred is None:
            y_pred = self(x, training=training)
        ta_logits = checks.single_output(y_pred, "the TA")
        # Regularization and `add_loss` terms of the TA pass. Read them now: each Student pass
        # below is a new top-level call of `self.model`, which clears them.
        total = sum((ops.sum(ops.cast(l, "float32")) for l in self.losses), ops.zeros(()))
        # Under a tf.distribute strategy Keras' losses are divided by the number of replicas
        # (their gradients are summed across replicas): divide the regularization likewise and
        # log every term multiplied back, as Keras does for its own losses.
        replicas = distribution_lib.replicas_in_sync()
        total = total / replicas
        if self.teacher is not None:
            teacher_outputs = ops.stop_gradient(self.teacher(x, training=False))
            teacher_from_logits = compiled.from_logits
        if teacher_outputs is not None:
            source = ("teacher outputs from the dataset" if self.teacher is None
                      else f"outputs of teacher '{self.teacher.name}'")
            checks.check_teacher_outputs(teacher_outputs, ta_logits, source)
        batch_size = ops.shape(ta_logits)[0]

        def term(head, name, weight, value):
            self._state.trackers[(head, name)].update_state(value * replicas,
                                                             sample_weight=batch_size)
            return weight * value

        kd_ta = compiled.distillation(teacher_from_logits=compiled.from_logits, name="kd_ta")
        kd_teacher = compiled.distillation(teacher_from_logits, name="kd_teacher")
        task = compiled.task_loss
        total += term("ta", "task", self.beta, task(labels, ta_logits, sample_weight))
        if teacher_outputs is not None:
            total += term("ta", "kd_teacher", self.beta_teacher,
                          kd_teacher(teacher_outputs, ta_logits, sample_weight))
        compiled.update_metrics("ta", labels, ta_logits, sample_weight)

        ta_target = ops.stop_gradient(ta_logits) if self.detach_ta else ta_logits
        gamma_t = self._kd_ta_weight(training)

        def student_terms(logits):
            """`{term: (coefficient, unweighted value)}` of one narrower member's outputs."""
            terms = {"task": (self.alpha, task(labels, logits, sample_weight)),
                     "kd_ta": (gamma_t, kd_ta(ta_target, logits, sample_weight))}
            if teacher_outputs is not None:
                terms["kd_teacher"] = (self.alpha_teacher,
                                       kd_teacher(teacher_outputs, logits, sample_weight))
            return terms

        students = self._state.students if training else None
        for i in range(len(self._student_widths)) if students is None else students:
            head, weight = self.head_names[i + 1], self.student_weights[i]
            with widths_lib.WidthScope(self.model, self._student_widths[i]):
                logits = self._narrower_outputs(x, training, head)
            for name, (coefficient, value) in student_terms(logits).items():
                total += weight * term(head, name, coefficient, value)
            compiled.update_metrics(head, labels, logits, sample_weight)

        # Drawn sub-networks (training only): each weighs as one Student of weight 1; the
        # logged terms are means over the draws.
        draws = []
        for _ in range(self.num_sampled_widths if training else 0):
            with self._width_draws.scope(self._width_seeds):
                logits = self._narrower_outputs(x, True, "sampled")
            draws.append(student_terms(logits))
        for name, (coefficient, _) in (draws[0].items() if draws else ()):
            mean = sum(terms[name][1] for terms in draws) / len(draws)
            total += len(draws) * term("sampled", name, coefficient, mean)
        return total

    def _narrower_outputs(self, x, training, head):
        """The TA's outputs at the width in scope (a Student's or a drawn one)."""
        if not (training and self.detach_shared):
            return checks.single_output(self.model(x, training=training), head)
        if self._state.shared_variables is None:  # the model's structure: fixed once built
            self._state.shared_variables = shared_weights.shared_variables(self.model)
        with shared_weights.detached(self._state.shared_variables, self.model.variables):
            return checks.single_output(self.model(x, training=training), head)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Every metric was updated in `compute_loss`, where the Student logits exist. Drawn
        # sub-networks are a training device: `evaluate` does not run or report them.
        results = self.get_metrics_result()
        if not self._state.training:
            results = {k: v for k, v in results.items() if not k.startswith("sampled_")}
        return results

    def _kd_ta_weight(self, training):
        """`gamma(t)`, read from the optimizer's iterations so compiled steps see the live `t`."""
        if not training or self.kd_warmup_steps == 0 or self.optimizer is None:
            return self.gamma
        mapping = self._state.optimizer_mapping
        if mapping is None:
            step = self.optimizer.iterations
        else:
            # JAX: the optimizer's variables are traced arguments of the train step; reading the
            # Variable itself would bake its value at trace time into the compiled function.
            with keras.StatelessScope(state_mapping=mapping):
                step = ops.convert_to_tensor(self.optimizer.iterations)
        progress = ops.cast(step, "float32") / float(self.kd_warmup_steps)
        return self.gamma * ops.minimum(progress, 1.0)

    def compute_loss_and_updates(self, *args, optimizer_variables=None, **kwargs):
        # JAX backend only (the JAX trainer's step calls it; other backends never do): expose the
        # traced optimizer variables to `_kd_ta_weight` for the duration of the step.
        if optimizer_variables is not None:
            self._state.optimizer_mapping = list(zip(self.optimizer.variables, optimizer_variables))
        try:
            return super().compute_loss_and_updates(
                *args, optimizer_variables=optimizer_variables, **kwargs
            )
        finally:
            self._state.optimizer_mapping = None

    # === Compiled functions ===

    def make_train_function(self, force=False):
        """One compiled train function per configuration of Students, picked per execution.

        Widths are static Python values at trace time, so each configuration has its own
        compiled function (at most `len(WidthSampler.configurations())`, each traced on first
        use). The step that picks a configuration is MatTA's own counter, saved with the model
        (`save_own_variables`), so a run resumed from a backup picks what the uninterrupted run
        picked, without reading any trainer's state.
        """
        if self.train_function is not None and not force:
            return self.train_function
        # All made now, not on first use: under `keras.distribution` the JAX trainer reads the
        # variables' shardings here, and `fit` purges the variables' values once it starts.
        functions = self._state.train_functions = {}
        for students in self._sampler.configurations():
            with dispatch.distinct_train_step(self):
                super().make_train_function(force=True)
            functions[students] = self.train_function

        def dispatching_train_function(*args, **kwargs):
            students = self._sampler.sample(self._state.next_step)
            self._state.next_step += self.steps_per_execution
            # Read by `compute_loss` while this configuration's function is traced (or, when
            # eager, runs).
            self._state.students = students
            try:
                return functions[students](*args, **kwargs)
            finally:
                self._state.students = None

        self.train_function = dispatch.keep_jax_state_on_error(
            dispatching_train_function,
            lambda: (self.trainable_variables, self.non_trainable_variables,
                     self.optimizer.variables, self.metrics_variables),
        )
        return self.train_function

    def make_test_function(self, force=False):
        if self.test_function is not None and not force:
            return self.test_function
        super().make_test_function(force=force)
        self.test_function = dispatch.keep_jax_state_on_error(
            self.test_function,
            lambda: (self.trainable_variables, self.non_trainable_variables,
                     self.metrics_variables),
        )
        return self.test_function

    # === Serialization ===

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store["train_step"] = np.asarray(self._state.next_step, "int64")
        if self._width_draws is not None:
            # Keras saves no SeedGenerator state: without it a resumed run would draw anew.
            store["width_draws"] = ops.convert_to_numpy(self._width_seeds.state)

    def load_own_variables(self, store):
        if "train_step" in store:  # absent from files saved before MatTA kept its own step
            self._state.next_step = int(np.asarray(store["train_step"]))
        if "width_draws" in store and self._width_draws is not None:
            self._width_seeds.state.assign(store["width_draws"])
        own = ("train_step", "width_draws")
        super().load_own_variables({key: store[key] for key in store.keys() if key not in own})

    def get_config(self):
        teacher = self.teacher_source
        if self.teacher is not None:
            teacher = keras.saving.serialize_keras_object(self.teacher)
        return {
            **super().get_config(),
            "model": keras.saving.serialize_keras_object(self.model),
            "student_widths": self.student_widths,
            "teacher": teacher,
            "beta": self.beta, "alpha": self.alpha, "gamma": self.gamma,
            "beta_teacher": self.beta_teacher, "alpha_teacher": self.alpha_teacher,
            "temperature": self.temperature, "kd_warmup_steps": self.kd_warmup_steps,
            "student_weights": self.student_weights, "detach_ta": self.detach_ta,
            "detach_shared": self.detach_shared,
            "strategy": self.strategy, "num_random_widths": self._sampler.num_random_widths,
            "num_sampled_widths": self.num_sampled_widths,
            "sampled_width_distribution": self.sampled_width_distribution,
            "seed": self.seed, "distillation": self.distillation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["model"] = keras.saving.deserialize_keras_object(config["model"])
        if isinstance(config["teacher"], dict):
            config["teacher"] = keras.saving.deserialize_keras_object(config["teacher"])
        return cls(**config)
