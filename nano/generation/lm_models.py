"""The generating models Nano builds: one interface; a PyTorch, an OpenVINO and an ONNX
Runtime kind.

Each is called like the original's ``generate()`` (``**tokenizer(prompts)`` and the usual
options) and returns the prompt plus new tokens. ``logits(ids, mask)`` gives every
position's logits, which the judgement reads. ``save(dir)`` writes a checksummed Nano
directory (the runtimes' ``save_directory``: written aside and swapped in whole) holding
standard files: ``config.json`` and a state dict, OpenVINO IR, or an ONNX model, the last two
deploying without Nano.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, ClassVar, Optional

import numpy as np
import torch

from nano.errors import NanoValueError
from nano.generation.causal_lm import (check_lengths, eos_ids, kv_shape, pad_id)
from nano.generation.decoding import Sampling, decode
from nano.generation.openvino_export import BEAM_INPUT, WEIGHT_MODES, activation_group
from nano.launcher.openmp_binding import unbind_main_thread
from nano.runtimes.model import torch_threads
from nano.runtimes.model_files import ModelLoadError, read_metadata, reading, save_directory

KIND = "generation"  # the metadata's "kind": InferenceOptimizer.load dispatches on it
CONFIG_FILE = "config.json"
GENERATE_OPTIONS = {"max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k",
                    "top_p", "eos_token_id", "pad_token_id", "generator"}


class GeneratingModel:
    """A causal LM rebuilt by Nano: ``generate()``, ``logits()``, ``save()``."""

    runtime: ClassVar[str] = ""

    def __init__(self, method: str, config: Any, eos: list[int], pad: int,
                 thread_num: Optional[int] = None):
        self.method = method  # e.g. "openvino_int4"
        # a temporary directory holding files this model reads, removed with the model
        self.keep_alive: Any = None
        self.config = config
        self.eos = eos
        self.pad = pad
        self.thread_num = thread_num

    @property
    def weights(self) -> str:
        """The weights' precision: the method's last part (fp32, bf16, int8, int4)."""
        return self.method.rsplit("_", 1)[-1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(method={self.method})"

    # generating -------------------------------------------------------------------

    def generate(self, input_ids: Optional[torch.Tensor] = None,
                 attention_mask: Optional[torch.Tensor] = None, **options: Any) -> torch.Tensor:
        """Prompt plus new tokens, as the original's ``generate()`` returns them."""
        unknown = sorted(set(options) - GENERATE_OPTIONS)
        if unknown:
            raise NanoValueError(f"generate() of a Nano model takes {sorted(GENERATE_OPTIONS)}; "
                                 f"got {unknown}")
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
            raise NanoValueError("generate() needs input_ids, a (batch, length) tensor of token "
                                 "ids, e.g. model.generate(**tokenizer(prompts, "
                                 "return_tensors='pt', padding=True))")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        max_new = options.pop("max_new_tokens", 20)
        check_lengths(self.config, input_ids.shape[1], max_new)
        eos = options.pop("eos_token_id", None)
        eos_list = self.eos if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        pad = options.pop("pad_token_id", None)
        return self._generate(input_ids, attention_mask, max_new, eos_list,
                              self.pad if pad is None else int(pad), options)

    def _generate(self, input_ids, attention_mask, max_new_tokens, eos, pad, options):
        sampling = Sampling(bool(options.get("do_sample", False)),
                            float(options.get("temperature", 1.0)),
                            int(options.get("top_k") or 0), float(options.get("top_p", 1.0)))
        with torch.no_grad():
            return decode(self.step, input_ids, attention_mask, max_new_tokens, sampling, eos,
                          pad, int(options.get("min_new_tokens", 0)), options.get("generator"))

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor) -> torch.Tensor:
        """Logits of the last position; a call with the whole prompt starts a new cache."""
        raise NotImplementedError

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Every position's logits (float32) for whole sequences, with a fresh cache."""
        raise NotImplementedError

    def cache_bytes_per_value(self) -> int:
        """Bytes of one key or value element in this model's KV cache."""
        raise NotImplementedError

    def streamed_weight_bytes(self, directory: str) -> int:
        """Bytes of weights a decode step reads, of this model as saved in ``directory``:
        all of them but the input embedding, of which a step reads one row per token."""
        raise NotImplementedError

    # saving ---------------------------------------------------------------------

    def save(self, directory: str) -> None:
        """Save to ``directory`` (checksummed, replaced in one step)."""
        def write(staging: str) -> dict:
            with open(os.path.join(staging, CONFIG_FILE), "w") as f:
                f.write(self.config.to_json_string())
            return {"kind": KIND, "runtime": self.runtime, "method": self.method,
                    "method_name": self.method, "eos": self.eos, "pad": self.pad,
                    "thread_num": self.thread_num, "files_written": self._save(staging)}
        save_directory(directory, write)

    def _save(self, directory: str) -> list[str]:
        raise NotImplementedError

    def size_on_disk(self, directory: str) -> int:
        """Bytes of the weights this model saved into ``directory``."""
        meta = read_metadata(directory)
        return sum(os.path.getsize(os.path.join(directory, f)) for f in meta["files_written"])


class TorchLM(GeneratingModel):
    """The PyTorch module itself (fp32, bf16, or weight-only INT8 by torchao), generating
    with ``transformers``' own ``generate()``; ``compile_*`` methods compile its forward for
    a static cache (``transformers``' ``cache_implementation="static"``)."""

    runtime = "pytorch"
    WEIGHTS_FILE = "weights.pt"

    def __init__(self, method: str, module: torch.nn.Module, thread_num: Optional[int] = None):
        super().__init__(method, module.config, eos_ids(module), pad_id(module), thread_num)
        self.module = module.eval()
        if method.startswith("compile_"):
            # compiled on first use, for each prompt length and cache size it meets
            getattr(module, "generation_config").cache_implementation = "static"
            module.forward = torch.compile(module.forward, dynamic=False)

    def _generate(self, input_ids, attention_mask, max_new_tokens, eos, pad, options):
        options = dict(options)
        generator = options.pop("generator", None)
        if generator is not None:  # transformers' sampling draws from the global generator
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=generator)))
        with torch.no_grad(), torch_threads(self.thread_num):
            return self.module.generate(input_ids=input_ids, attention_mask=attention_mask,
                                        max_new_tokens=max_new_tokens, eos_token_id=eos or None,
                                        pad_token_id=pad, **options)

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor) -> torch.Tensor:  # pragma: no cover - generate()
        raise NotImplementedError("TorchLM generates with transformers' generate()")

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), torch_threads(self.thread_num):
            out = self.module(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return out.logits.float()

    def cache_bytes_per_value(self) -> int:
        # the cache holds activations: float32, or bfloat16 in a bf16 copy; torchao's INT8
        # is weight-only
        return 2 if self.weights == "bf16" else 4

    def streamed_weight_bytes(self, directory: str) -> int:
        size = self.size_on_disk(directory)
        getter = getattr(self.module, "get_input_embeddings", None)
        embedding = getter() if callable(getter) else None
        if embedding is None or getattr(self.config, "tie_word_embeddings", False):
            return size  # no embedding apart, or the head streams it whole
        weight = embedding.weight  # a plain tensor: torchao quantizes Linear layers only
        return max(0, size - weight.numel() * weight.element_size())

    def _save(self, directory):
        torch.save(self.module.state_dict(), os.path.join(directory, self.WEIGHTS_FILE))
        return [self.WEIGHTS_FILE]

    @classmethod
    def load_files(cls, directory: str, meta: dict, config: Any) -> "TorchLM":
        from transformers import AutoModelForCausalLM

        # Built in the saved precision without initializing its weights (left unwritten, they
        # take no memory until the state replaces them): a 0.43 B Llama's fp32 load peaked
        # at twice its size and spent 4 s drawing random weights before.
        dtype = torch.bfloat16 if meta["method"].endswith("bf16") else torch.float32
        try:
            with _no_weight_init():
                # .to(): the buffers it computes (rotary frequencies) too, as the build did
                module = AutoModelForCausalLM.from_config(config, dtype=dtype).to(dtype)
        except Exception as e:
            raise ModelLoadError(f"{directory!r}: transformers cannot build its model from "
                                 f"config.json ({type(e).__name__}: {e})") from None
        state = torch.load(os.path.join(directory, cls.WEIGHTS_FILE), weights_only=False)
        module.load_state_dict(state, assign=True)
        if getattr(config, "tie_word_embeddings", False):
            module.tie_weights()
        return cls(meta["method"], module, meta.get("thread_num"))


class OpenVINOLM(GeneratingModel):
    """A stateful OpenVINO model (the KV cache inside it), decoded by Nano's loop."""

    runtime = "openvino"
    XML = "openvino_model.xml"

    def __init__(self, method: str, ov_model: Any, config: Any, eos: list[int], pad: int,
                 thread_num: Optional[int] = None):
        super().__init__(method, config, eos, pad, thread_num)
        import openvino as ov

        self.ov_model = ov_model
        precision = "bf16" if self.weights == "bf16" else "f32"
        options: dict = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
        if self.weights == "fp32":  # the cache at full precision too: fp32 is exact
            options["KV_CACHE_PRECISION"] = "f32"
        if self.weights in WEIGHT_MODES:
            options["DYNAMIC_QUANTIZATION_GROUP_SIZE"] = activation_group(ov_model)
        if thread_num:
            options["INFERENCE_NUM_THREADS"] = thread_num
        unbind_main_thread()  # OpenVINO sizes and places its threads from the caller's mask
        self.compiled = ov.Core().compile_model(ov_model, "CPU", options)
        self.request = self.compiled.create_infer_request()
        self.layers, self.kv_heads, self.head_dim = kv_shape(config)
        # saves written before the export fed beam_idx have states without a start value
        self.with_beam = any(BEAM_INPUT in port.get_names() for port in ov_model.inputs)

    def _run(self, input_ids, attention_mask, position_ids, fresh: bool) -> torch.Tensor:
        import openvino as ov

        inputs = {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy(),
                  "position_ids": position_ids.numpy()}
        if fresh:  # a new cache, sized for this batch (the state starts with no rows)
            self.request.reset_state()
            if not self.with_beam:
                empty = np.zeros((input_ids.shape[0], self.kv_heads, 0, self.head_dim),
                                 np.float32)
                for state in self.request.query_state():
                    state.state = ov.Tensor(empty)
        if self.with_beam:  # rows never reorder: Nano decodes without beam search
            inputs[BEAM_INPUT] = np.arange(input_ids.shape[0], dtype=np.int32)
        out = self.request.infer(inputs)
        return torch.from_numpy(out["logits"].copy())

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor) -> torch.Tensor:
        fresh = input_ids.shape[1] == attention_mask.shape[1]
        return self._run(input_ids, attention_mask.long(), position_ids.long(), fresh)[:, -1]

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from nano.generation.decoding import position_ids

        return self._run(input_ids, attention_mask.long(), position_ids(attention_mask), True)

    def cache_bytes_per_value(self) -> int:
        # the plugin's choice unless set: u8 (with a scale per token) beside compressed weights
        return int(self.compiled.get_property("KV_CACHE_PRECISION").size)

    def streamed_weight_bytes(self, directory: str) -> int:
        # counted in the graph: NNCF keeps the embedding at INT8 beside INT4 layers, so its
        # share of the file is not its share of the parameters
        constants = [op for op in self.ov_model.get_ops() if op.get_type_name() == "Constant"]
        total = sum(op.get_byte_size() for op in constants) - _embedding_bytes(self.ov_model)
        return total // 2 if self.weights == "bf16" else total  # bf16: converted on compile

    def _save(self, directory):
        import openvino as ov

        ov.save_model(self.ov_model, os.path.join(directory, self.XML), compress_to_fp16=False)
        return [self.XML, self.XML[:-4] + ".bin"]

    @classmethod
    def load_files(cls, directory: str, meta: dict, config: Any) -> "OpenVINOLM":
        import openvino as ov

        ov_model = ov.Core().read_model(os.path.join(directory, cls.XML))
        return cls(meta["method"], ov_model, config, meta["eos"], meta["pad"],
                   meta.get("thread_num"))


class OnnxRuntimeLM(GeneratingModel):
    """An ONNX model from onnxruntime-genai's builder, run by an ONNX Runtime session and
    decoded by Nano's loop; Nano keeps the cache and feeds it back each step.

    The graph's attention (``GroupQueryAttention``) reads each row's length from the mask's
    sum and takes a row's tokens to be its first ones: it expects right padding, where
    ``generate()`` receives left padding. Each row's real tokens are therefore moved to the
    front for the prompt pass, and a row's new token lands right after its own tokens in a
    cache as long as the longest row (the op writes it at the row's length).

    The cache is one buffer per layer that the op reads as its past and writes in place as
    its present (bound to both through IO binding), so a step copies no cache; it grows by
    doubling when a sequence outgrows it.
    """

    runtime = "onnxruntime"
    ONNX = "model.onnx"
    CACHE_STEP = 256  # the least cache positions allocated

    def __init__(self, method: str, directory: str, config: Any, eos: list[int], pad: int,
                 thread_num: Optional[int] = None, keep_alive: Any = None):
        super().__init__(method, config, eos, pad, thread_num)
        import onnxruntime as ort

        from nano.runtimes.backends.onnxruntime_fp32 import session_options

        self.directory = directory
        self.keep_alive = keep_alive  # the builder's temporary directory
        unbind_main_thread()  # ORT's threads inherit the caller's mask
        self.session = ort.InferenceSession(os.path.join(directory, self.ONNX),
                                            session_options(thread_num),
                                            providers=["CPUExecutionProvider"])
        self.layers = kv_shape(config)[0]
        # each cache input with the output the op writes into the same buffer
        self._bindings = [(f"past_key_values.{i}.{kv}", f"present.{i}.{kv}")
                          for i in range(self.layers) for kv in ("key", "value")]
        names = {i.name for i in self.session.get_inputs()}
        missing = [past for past, _ in self._bindings if past not in names]
        if missing or "attention_mask" not in names:
            raise ModelLoadError(f"{os.path.join(directory, self.ONNX)} is not a model with a "
                                 f"KV cache as onnxruntime-genai's builder writes it (no "
                                 f"{(missing or ['attention_mask'])[0]} input)")
        self._cache_shape = kv_shape(config)[1:]  # (kv heads, head size)
        self._vocab = next(o for o in self.session.get_outputs() if o.name == "logits").shape[-1]
        self._as_value = ort.OrtValue.ortvalue_from_numpy  # the array's memory, no copy
        self._cache: list = []  # numpy buffers, (batch, kv heads, capacity, head size)
        self._binding: Any = None  # the cache bound as inputs and outputs
        self._lengths = np.zeros(0, np.int64)  # each row's tokens in the cache

    def _reserve(self, batch: int, columns: int, keep: bool) -> None:
        """Cache buffers for ``columns`` positions; ``keep``: carry the current ones over."""
        capacity = self._cache[0].shape[2] if keep and self._cache else 0
        if columns <= capacity:
            return
        capacity = max(columns, 2 * capacity, self.CACHE_STEP)
        heads, size = self._cache_shape
        cache = [np.zeros((batch, heads, capacity, size), np.float32) for _ in self._bindings]
        if keep:
            for new, old in zip(cache, self._cache):
                new[:, :, :old.shape[2]] = old
        binding = self.session.io_binding()
        for (past, present), buffer in zip(self._bindings, cache):
            value = self._as_value(buffer)
            binding.bind_ortvalue_input(past, value)
            binding.bind_ortvalue_output(present, value)
        self._cache, self._binding = cache, binding  # the buffers outlive their binding

    def _run(self, input_ids: np.ndarray, mask: np.ndarray, keep: bool) -> torch.Tensor:
        self._reserve(input_ids.shape[0], mask.shape[1], keep)
        logits = np.empty((*input_ids.shape, self._vocab), np.float32)  # new: no aliasing
        self._binding.bind_cpu_input("input_ids", input_ids)
        self._binding.bind_cpu_input("attention_mask", mask)
        self._binding.bind_ortvalue_output("logits", self._as_value(logits))
        self.session.run_with_iobinding(self._binding)
        return torch.from_numpy(logits)

    def _prompt_pass(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """All positions' logits of the prompt, each row's real tokens moved to the front;
        returns them with each row's count of real tokens."""
        real = attention_mask.bool()
        real[:, 0] |= ~real.any(1)  # an all-padding row: its first position stands in
        lengths = real.sum(1)
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)  # real ones first
        packed = torch.gather(input_ids, 1, order)
        logits = self._run(np.ascontiguousarray(packed.numpy(), np.int64),
                           _front_mask(lengths.numpy(), input_ids.shape[1]), keep=False)
        return logits, lengths, order

    def step(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
             position_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] == attention_mask.shape[1]:  # a prompt: a new cache
            logits, lengths, _ = self._prompt_pass(input_ids, attention_mask)
            self._lengths = lengths.numpy()
            return logits[torch.arange(len(lengths)), lengths - 1]
        self._lengths = self._lengths + input_ids.shape[1]
        ids = np.ascontiguousarray(input_ids.numpy(), np.int64)
        return self._run(ids, _front_mask(self._lengths, attention_mask.shape[1]),
                         keep=True)[:, -1]

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        logits, _, order = self._prompt_pass(input_ids, attention_mask)
        out = torch.zeros_like(logits)  # back to the caller's layout; pad positions 0
        out.scatter_(1, order[..., None].expand_as(logits), logits)
        return out

    def cache_bytes_per_value(self) -> int:
        return 4  # the graph's cache inputs are float32

    def streamed_weight_bytes(self, directory: str) -> int:
        import onnx

        graph = onnx.load(os.path.join(directory, self.ONNX), load_external_data=False).graph
        sizes = {t.name: _initializer_bytes(t) for t in graph.initializer}
        lookups = [n for n in graph.node if n.op_type.startswith("Gather")
                   and "input_ids" in n.input[1:]]
        table = {name for n in lookups for name in n.input if name in sizes}
        # a tied head reads the same table whole: then it streams
        read_whole = {name for n in graph.node if all(n is not g for g in lookups)
                      for name in n.input}
        return sum(size for name, size in sizes.items()
                   if name not in table or name in read_whole)

    def _save(self, directory):
        files = [f for f in os.listdir(self.directory) if f.startswith(self.ONNX)]
        for name in files:  # model.onnx and its external weights (model.onnx.data)
            shutil.copyfile(os.path.join(self.directory, name), os.path.join(directory, name))
        return sorted(files)

    @classmethod
    def load_files(cls, directory: str, meta: dict, config: Any) -> "OnnxRuntimeLM":
        return cls(meta["method"], directory, config, meta["eos"], meta["pad"],
                   meta.get("thread_num"))


def _no_weight_init() -> Any:
    """transformers' context that builds a model without initializing its weights (in
    ``initialization`` since 5.0, ``modeling_utils`` before)."""
    import contextlib
    import importlib

    for where in ("transformers.initialization", "transformers.modeling_utils"):
        try:
            return importlib.import_module(where).no_init_weights()
        except (ImportError, AttributeError):
            continue
    return contextlib.nullcontext()


def _front_mask(lengths: np.ndarray, columns: int) -> np.ndarray:
    """The builder's mask: each row's ``lengths`` tokens first (numpy: it runs every step)."""
    return (np.arange(columns)[None] < lengths[:, None]).astype(np.int64)


def _initializer_bytes(tensor: Any) -> int:
    """Bytes of an ONNX initializer, stored inline or in an external file."""
    for entry in tensor.external_data:
        if entry.key == "length":
            return int(entry.value)
    return len(tensor.raw_data)


def _embedding_bytes(ov_model: Any) -> int:
    """Bytes of the constants behind the Gather that looks up ``input_ids`` (the embedding
    table and, when compressed, its scales and zero points)."""
    ids = next(p for p in ov_model.get_parameters() if "input_ids" in p.output(0).get_names())
    frontier, total = [ids], 0
    while frontier:
        node = frontier.pop()
        for target in node.output(0).get_target_inputs():
            user = target.get_node()
            if user.get_type_name() == "Convert":
                frontier.append(user)
            elif user.get_type_name() == "Gather" and target.get_index() == 1:
                stack, seen = [user.input_value(0).get_node()], set()
                while stack:
                    upstream = stack.pop()
                    if upstream.get_friendly_name() in seen:
                        continue
                    seen.add(upstream.get_friendly_name())
                    if upstream.get_type_name() == "Constant":
                        total += upstream.get_byte_size()
                    else:
                        stack += [upstream.input_value(i).get_node()
                                  for i in range(upstream.get_input_size())]
    return total


KINDS = {cls.runtime: cls for cls in (TorchLM, OpenVINOLM, OnnxRuntimeLM)}


def is_generation_dir(directory: str) -> bool:
    """Whether ``directory`` holds a saved generating model (not another Nano model)."""
    try:
        with open(os.path.join(directory, "nano_model.json")) as f:
            return json.load(f).get("kind") == KIND
    except (OSError, ValueError):
        return False


def load_lm(directory: str, thread_num: Optional[int] = None) -> GeneratingModel:
    """Load a directory written by ``GeneratingModel.save`` (checksums verified first)."""
    from transformers import AutoConfig

    with reading(directory):
        meta = read_metadata(directory)
        if meta.get("kind") != KIND or meta.get("runtime") not in KINDS:
            raise ModelLoadError(f"{directory!r} is a Nano model but not a generating one: "
                                 f"load it with InferenceOptimizer.load")
        with open(os.path.join(directory, CONFIG_FILE)) as f:
            config_dict = json.load(f)
        model_type = config_dict.pop("model_type", None)
        config = AutoConfig.for_model(model_type, **config_dict) if model_type else None
        if config is None:
            raise ModelLoadError(f"{directory!r}: {CONFIG_FILE} names no model_type")
        if thread_num is not None:
            meta["thread_num"] = thread_num
        return KINDS[meta["runtime"]].load_files(directory, meta, config)
