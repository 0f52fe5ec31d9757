"""What --lr means in a run of this milestone, said by every run: for the encoder-decoder Transformer (translate,
copy, vs_rnn) it multiplies the paper's schedule, eq. 3 (1 = the paper); for the character-level GPT (charlm,
vs_lstm) it is the peak AdamW rate. Each card records `lr_means` and `peak_lr`, the rate at the top of the
schedule: the number to set beside another run's, whichever experiment it came from."""

from .seq2seq import rate

SCHEDULE_FACTOR = "factor on the paper's schedule (eq. 3)"
PEAK = "peak AdamW rate"


def lr_record(cfg, schedule: bool) -> dict:
    """{lr_means, peak_lr} of a run; `schedule`: --lr multiplies eq. 3, whose peak is at step_num = warmup."""
    if schedule:
        return dict(lr_means=SCHEDULE_FACTOR, peak_lr=cfg.lr * rate(cfg.warmup, cfg.d_model, cfg.warmup))
    return dict(lr_means=PEAK, peak_lr=cfg.lr)


def lr_line(cfg, record: dict) -> str:
    """The run's printed line: what --lr was taken as, and the peak rate it gave."""
    if record["lr_means"] == PEAK:
        return f"--lr {cfg.lr:g}: the {PEAK}"
    return f"--lr {cfg.lr:g}: a {SCHEDULE_FACTOR}, peak rate {record['peak_lr']:.3g} at step {cfg.warmup}"
