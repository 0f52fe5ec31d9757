"""06 — The Transformer (Vaswani et al. 2017) for translation, and the decoder-only GPT language model
(Radford et al. 2018) built from the same attention."""

META = dict(
    short='Vaswani et al. 2017',
    year=2017,
    years="2017-2018",  # the span of the papers the chapter follows
    title="The Transformer",
    paper="Vaswani et al. 2017; Radford et al. 2018",
    dataset="Multi30k de-en, Tiny Shakespeare",
    metric="BLEU / val_loss",
)
