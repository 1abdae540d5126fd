"""The encoder warm-up of continued pre-training: the encoder is unchanged for exactly `steps` steps."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch

from cropssl.callbacks.warmup import EncoderWarmup
from cropssl.data.datamodule import PixelDataModule
from cropssl.data.shard_writer import write_shards
from cropssl.encoder import PixelTimeSeriesEncoder
from cropssl.methods.mae import MAE
from tests.conftest import make_samples


def _changed(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return any(not torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("max_steps", [3, 4])
def test_encoder_fixed_for_the_warmup_steps_then_trained(tmp_path, max_steps):
    write_shards(make_samples(256, seed=1), tmp_path / "train", samples_per_record=64)
    torch.manual_seed(0)
    enc = PixelTimeSeriesEncoder(d=32, depth=1, heads=4, mlp_ratio=2.0)
    mae = MAE(enc, decoder_dim=32, decoder_depth=1, decoder_heads=4, optimizer={"lr": 1e-2})
    enc0, dec0 = copy.deepcopy(mae.encoder), copy.deepcopy(mae.decoder)
    dm = PixelDataModule(str(tmp_path / "train"), batch_size=32, shuffle_buffer=64, steps_per_epoch=10)
    trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[EncoderWarmup(steps=3)], accelerator="cpu")  # fmt: skip
    trainer.fit(mae, datamodule=dm)
    assert _changed(mae.decoder, dec0)  # the heads learn from the first step
    assert _changed(mae.encoder, enc0) == (max_steps > 3)  # weight decay included: no drift while held


def test_negative_steps_refused():
    with pytest.raises(ValueError, match="steps must be >= 0"):
        EncoderWarmup(steps=-1)
