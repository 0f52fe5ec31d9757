"""Write with a trained 06_transformer run: continue a prompt (charlm) or translate a sentence (translate).

    python -m milestones sample 06_transformer --run runs/06_transformer/<charlm run> --prompt "ROMEO:" --n 300
    python -m milestones sample 06_transformer --run runs/06_transformer/<translate run> \\
        --source "Ein Mann fährt Fahrrad."
"""

from pathlib import Path

import torch

from common.checkpoint import find_checkpoint, load_checkpoint, restore
from common.data.text import decode as decode_chars, encode as encode_chars
from common.device import pick_device
from common.errors import UserError, exit_on_user_error
from common.sample_cli import sample_parser

from . import data, decode
from .train import gpt_from, transformer_from


@torch.no_grad()
def continue_text(state: dict, prompt: str, n: int, temperature: float, top_k, seed: int, device) -> str:
    """The prompt and n more characters, each drawn from the GPT's softmax (with its KV cache)."""
    cfg, vocab = state["config"], state["vocab"]
    model = gpt_from({**cfg, "dropout": 0.0}, len(vocab))
    restore({"model": state["model"]}, model)  # weights only: leave the global RNG alone
    ids = encode_chars(prompt, vocab, False)
    if len(ids) == 0:
        raise UserError("the prompt is empty: give at least one character (the default is a newline)")
    if len(ids) > model.context:
        raise UserError(f"the prompt has {len(ids)} characters, more than the model's context of {model.context}")
    model.to(device).eval()
    g = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(ids.view(1, -1).to(device), n, temperature, top_k, generator=g)  # (1, T + n)
    return prompt + decode_chars(out[0, len(ids):].tolist(), vocab, False)


def trained_transformer(state: dict, run_dir: Path):
    """(tokenizer, model) of a translate run: its averaged weights where it kept them, else the final ones."""
    tok = data.load_tokenizer(run_dir / "tokenizer.json")
    model = transformer_from({**state["config"], "dropout": 0.0}, state["vocab_size"], state["max_len"])
    averaged = run_dir / "averaged.pt"
    weights = torch.load(averaged, map_location="cpu", weights_only=True) if averaged.is_file() else state
    restore({"model": weights["model"]}, model)
    return tok, model


@torch.no_grad()
def translate_text(state: dict, run_dir: Path, source: str, device) -> str:
    """Beam search (the run's beam size and alpha) with the run's tokenizer and its averaged weights if any."""
    cfg = state["config"]
    tok, model = trained_transformer(state, run_dir)
    ids = data.encode(tok, [source])[0] + [data.EOS]
    longest = state["max_len"] - decode.EXTRA_LENGTH - 1
    if len(ids) > longest:
        raise UserError(f"the source is {len(ids)} tokens long; this model reads at most {longest}")
    model.to(device)
    (hyp,) = decode.translate(model, [ids], data.BOS, data.EOS, data.PAD, cfg["beam"], cfg["alpha"])
    return data.decode_ids(tok, hyp)


def main(argv=None, prog="python -m milestones sample 06_transformer"):
    def go():
        p = sample_parser(prog, "Continue a prompt with a charlm run (default prompt: a newline; --temperature 0: "
                          "greedy), or translate a German sentence with a translate run.", n_default=500,
                          temperature=0.8, n_help="charlm: characters to generate")
        p.add_argument("--source", default=None, metavar="TEXT", help="translate: the sentence to translate")
        p.add_argument("--top-k", type=int, default=None, metavar="K", help="charlm: sample among the k likeliest "
                       "only")
        args = p.parse_args(argv)
        if args.n < 1:
            raise UserError(f"--n must be at least 1, got {args.n}")
        if args.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {args.temperature}")
        if args.top_k is not None and args.top_k < 1:
            raise UserError(f"--top-k must be at least 1, got {args.top_k}")
        run_dir = find_checkpoint(args.run).parent
        state = load_checkpoint(args.run)
        experiment = state.get("config", {}).get("experiment")
        device = pick_device(args.device)
        if experiment == "charlm":
            if args.source is not None:
                raise UserError(f"{args.run} is a charlm run: give it --prompt, not --source")
            prompt = "\n" if args.prompt is None else args.prompt
            text = continue_text(state, prompt, args.n, args.temperature, args.top_k, args.seed, device)
        elif experiment == "translate":
            if args.source is None:
                raise UserError(f"{args.run} is a translation run: give the sentence to translate with --source")
            if args.prompt is not None:
                raise UserError(f"{args.run} is a translation run: give it --source, not --prompt")
            text = translate_text(state, run_dir, args.source, device)
        else:
            raise UserError(f"{args.run} is a {experiment} run, which has nothing to sample (use a charlm or "
                            f"translate run)")
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    return exit_on_user_error(go)


if __name__ == "__main__":
    main()
