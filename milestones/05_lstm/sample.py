"""Generate text from a trained LSTM language model.

    python -m milestones sample 05_lstm --run runs/05_lstm/<run dir> --temperature 0.8 --n 500
    python -m milestones sample 05_lstm --run <ptb run dir> --prompt "the company said"
"""

from pathlib import Path

import torch

from common.checkpoint import load_checkpoint, restore
from common.data.text import decode, encode
from common.device import pick_device
from common.errors import UserError, exit_on_user_error
from common.sample_cli import sample_parser

from .model import LanguageModel


@torch.no_grad()
def generate(model, vocab, words: bool, prompt: str, length: int, temperature: float, device, seed: int = 0) -> str:
    """Feed the prompt, then draw each next token from softmax(logits / temperature), one step at a time."""
    g = torch.Generator(device=device).manual_seed(seed)
    model.eval()
    ids = encode(prompt, vocab, words).to(device) if prompt else torch.tensor([0], device=device)
    logits, state = model(ids.view(1, -1))  # (1, T, V): the prompt sets the state
    out = []
    for _ in range(length):
        p = torch.softmax(logits[0, -1].float() / temperature, dim=-1)
        nxt = torch.multinomial(p, 1, generator=g)  # (1,)
        out.append(int(nxt))
        logits, state = model(nxt.view(1, 1), state)
    return (prompt + (" " if words and prompt else "")) + decode(out, vocab, words)


def main(argv=None, prog="python -m milestones sample 05_lstm"):
    def go():
        p = sample_parser(prog, "Sample text from a 05_lstm language-model run (the prompt defaults to a "
                          "newline; PTB: 'the').", n_default=500, temperature=0.8,
                          n_help="tokens to generate (characters or words)")
        args = p.parse_args(argv)
        if args.n < 1:
            raise UserError(f"--n must be at least 1, got {args.n}")
        if not args.temperature > 0:
            raise UserError(f"--temperature must be positive, got {args.temperature}")
        state = load_checkpoint(args.run)
        cfg = state.get("config", {})
        if "vocab" not in state or cfg.get("experiment") not in ("ptb", "shakespeare"):
            raise UserError(f"{args.run} is not a language-model run (the adding experiment generates nothing)")
        device = pick_device(args.device)
        vocab, words = state["vocab"], state["words"]
        model = LanguageModel(len(vocab), cfg["hidden"], cfg["layers"], 0.0, cfg["model"], "torch"
                              if cfg["forget_gate"] or cfg["model"] != "lstm" else "scratch", cfg["forget_gate"])
        restore({"model": state["model"]}, model)  # weights only: leave the global RNG alone
        prompt = args.prompt if args.prompt is not None else ("the" if words else "\n")
        text = generate(model.to(device), vocab, words, prompt, args.n, args.temperature, device, args.seed)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    return exit_on_user_error(go)


if __name__ == "__main__":
    main()
