"""clozeformer: BERT, BART, ELECTRA and T5 with their real pretraining objectives."""
