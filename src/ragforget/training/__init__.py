"""The one training loop: a LightningModule, its data, and train() -> checkpoint folder."""
