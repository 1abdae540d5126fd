"""The encoder EMA of continued pre-training: checkpoints hold the average, resume stays exact."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from cropssl.callbacks.weight_ema import EncoderEMA
from cropssl.data.datamodule import PixelDataModule
from cropssl.data.shard_writer import write_shards
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.methods.mae import MAE
from tests.conftest import make_samples

DECAY = 0.8


class _Record(pl.Callback):
    """The encoder's floating-point state at the start and after every optimiser step."""

    def __init__(self) -> None:
        self.states: list[dict[str, torch.Tensor]] = []

    def _snap(self, pl_module: pl.LightningModule) -> None:
        sd = pl_module.encoder.state_dict()
        self.states.append({k: v.detach().clone() for k, v in sd.items() if v.is_floating_point()})

    def on_train_start(self, trainer, pl_module):
        self._snap(pl_module)

    def on_train_batch_end(self, trainer, pl_module, *args):
        self._snap(pl_module)


def _fit(tmp_path, max_steps, ckpt_path=None, extra=(), checkpoints=False):
    torch.manual_seed(0)
    enc = PixelTimeSeriesEncoder(d=32, depth=1, heads=4, mlp_ratio=2.0)
    mae = MAE(enc, decoder_dim=32, decoder_depth=1, decoder_heads=4, optimizer={"lr": 1e-2})
    mae.set_seed(0)
    dm = PixelDataModule(
        str(tmp_path / "train"), batch_size=32, shuffle_buffer=64, steps_per_epoch=10, seed=0
    )
    ema = EncoderEMA(decay=DECAY)
    trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=checkpoints,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[ema, *extra], accelerator="cpu", deterministic=True)  # fmt: skip
    trainer.fit(mae, datamodule=dm, ckpt_path=ckpt_path)
    return trainer, mae


@pytest.fixture
def shards(tmp_path):
    write_shards(make_samples(256, seed=1), tmp_path / "train", samples_per_record=64)
    return tmp_path


def test_checkpoint_encoder_is_the_ema_of_the_trained_weights(shards):
    rec = _Record()
    trainer, mae = _fit(shards, 4, extra=[rec])
    path = shards / "last.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    # the formula, by hand over the recorded weights: s_0 = start, s_t = d s_{t-1} + (1 - d) w_t
    expected = {k: v.double() for k, v in rec.states[0].items()}
    for state in rec.states[1:]:
        expected = {k: DECAY * expected[k] + (1 - DECAY) * state[k].double() for k in expected}
    assert len(rec.states) == 5
    moved = False
    for k, v in expected.items():
        torch.testing.assert_close(ckpt["state_dict"]["encoder." + k].double(), v, atol=1e-6, rtol=0)
        moved |= not torch.equal(rec.states[-1][k], rec.states[0][k])
    assert moved
    # the trained weights stay in memory and in the callback's state, not the average
    raw = ckpt["callbacks"]["EncoderEMA"]["raw"]
    for k, v in rec.states[-1].items():
        assert torch.equal(raw[k], v)
        assert torch.equal(mae.encoder.state_dict()[k], v)
    assert ckpt["encoder_ema"] == {"decay": DECAY, "step": 4}


def _every_2(d):
    from pytorch_lightning.callbacks import ModelCheckpoint

    return ModelCheckpoint(dirpath=d, filename="{step}", every_n_train_steps=2, save_top_k=-1)


def test_resume_is_exact(shards):
    _fit(shards, 4, extra=[_every_2(shards / "straight")], checkpoints=True)
    half = str(shards / "straight" / "step=2.ckpt")
    _fit(shards, 4, ckpt_path=half, extra=[_every_2(shards / "resumed")], checkpoints=True)
    a = torch.load(shards / "straight" / "step=4.ckpt", weights_only=False)
    b = torch.load(shards / "resumed" / "step=4.ckpt", weights_only=False)
    half = torch.load(half, weights_only=False)
    assert a["global_step"] == b["global_step"] == 4
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, atol=1e-6, rtol=0, msg=k)
    for k, v in a["callbacks"]["EncoderEMA"]["raw"].items():
        torch.testing.assert_close(b["callbacks"]["EncoderEMA"]["raw"][k], v, atol=1e-6, rtol=0, msg=k)
    # the resumed run trained on from the step-2 weights, not from the step-2 average it loaded first
    raw2 = half["callbacks"]["EncoderEMA"]["raw"]
    assert any(not torch.equal(v, half["state_dict"]["encoder." + k]) for k, v in raw2.items())


def test_bad_decay_refused():
    with pytest.raises(ValueError, match=r"decay must be in \[0, 1\)"):
        EncoderEMA(decay=1.0)
