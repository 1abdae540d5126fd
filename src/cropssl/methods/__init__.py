"""Pre-training methods: one flat LightningModule per method over :class:`~cropssl.methods.base.SSLMethod`."""
