"""05 — Long short-term memory (Hochreiter & Schmidhuber 1997; Gers et al. 2000) and LSTM language models
(Zaremba, Sutskever & Vinyals 2014)."""

META = dict(
    short='Hochreiter & Schmidhuber 1997',
    year=1997,
    years="1997-2014",  # the span of the papers the chapter follows
    title="Long short-term memory",
    paper="Hochreiter & Schmidhuber 1997; Gers et al. 2000; Zaremba et al. 2014",
    dataset="adding problem (generated); PTB; Tiny Shakespeare",
    metric="test_perplexity; val_loss (nats/char)",
)
