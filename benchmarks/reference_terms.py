"""Every kdrepro loss term against the published reference implementation on the same inputs.

The reference code is not part of kdrepro: fetch it into a folder outside the repository and name it::

    git clone https://github.com/HobbitLong/RepDistiller /tmp/ref/RepDistiller      # b84f547
    git clone https://github.com/megvii-research/mdistiller /tmp/ref/mdistiller      # a08d46f (DKD)
    .venv/bin/python benchmarks/reference_terms.py --repdistiller /tmp/ref/RepDistiller \\
        --mdistiller /tmp/ref/mdistiller [--out results/benchmarks]

Inputs: the features and logits of randomly initialised kdrepro networks (teacher resnet32x4, student
resnet8x4; FitNets also resnet32x4 -> ShuffleV1 at hint layer 2, where ConvReg's transposed convolution
applies) on one batch of 16 random 32x32 images, float32 on the CPU. Every trainable extra (regressors,
embeddings, connectors, the paraphraser) is built by kdrepro and copied into the reference module, so both
sides compute with the same weights. Each term's loss is compared without its weight. Writes
``reference_terms.json`` and ``.md`` (the maximum absolute and relative difference per term, and the
reference commits) and prints the table.
"""
from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from kdrepro import losses
from kdrepro.models import create_model
from kdrepro.terms import TERMS, StepInputs, TermContext
from kdrepro.terms.crd import contrast_loss
from kdrepro.terms.dkd import dkd_loss


def commit(folder: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def features(model, x):
    model.eval()
    with torch.no_grad():
        return model(x, return_features=True)


def term(name, ctx, **params):
    cls = TERMS.get(name)
    return cls(cls.Params(**params), ctx)


def step(s_logits, t_logits, s_feats, t_feats, targets):
    return StepInputs(student_logits=s_logits, targets=targets, indices=torch.arange(len(targets)), images=None,
                      epoch=100, curriculum=False, student_features=s_feats, teacher_features=t_feats,
                      teacher_logits=t_logits)


def rd_feats(feats):
    """RepDistiller's feature list: the stage maps, then the pooled vector."""
    return [*feats["stages"], feats["pooled"]]


def compare(repdistiller: Path, mdistiller: Path) -> dict[str, dict]:
    sys.path.insert(0, str(repdistiller))
    zoo = importlib.import_module("distiller_zoo")
    util = importlib.import_module("models.util")
    crd = importlib.import_module("crd.criterion")
    sys.path.insert(0, str(mdistiller))
    mdkd = importlib.import_module("mdistiller.distillers.DKD")

    torch.manual_seed(0)
    teacher, student = create_model("resnet32x4", 100), create_model("resnet8x4", 100)
    x = torch.randn(16, 3, 32, 32)
    targets = torch.randint(0, 100, (16,))
    t_logits, t_feats = features(teacher, x)
    s_logits, s_feats = features(student, x)
    ctx = TermContext(num_classes=100, num_samples=16, student=student, teacher=teacher, device=torch.device("cpu"))
    st = step(s_logits, t_logits, s_feats, t_feats, targets)
    fs, ft = rd_feats(s_feats), rd_feats(t_feats)
    out: dict[str, tuple[torch.Tensor, torch.Tensor, str]] = {}

    out["ce"] = (losses.cross_entropy(s_logits, targets), torch.nn.CrossEntropyLoss()(s_logits, targets),
                 "torch.nn.CrossEntropyLoss (the authors' and RepDistiller's criterion_cls)")
    out["kd"] = (losses.kd_loss(s_logits, t_logits, 4.0), zoo.DistillKL(4.0)(s_logits, t_logits),
                 "RepDistiller distiller_zoo/KD.py DistillKL(T=4)")
    out["mse"] = (losses.logit_mse(s_logits, t_logits), torch.nn.MSELoss()(s_logits, t_logits),
                  "torch.nn.MSELoss (the SLKD authors' criterionLogits)")

    # FitNets with ConvReg, where the maps differ in size (resnet32x4 -> ShuffleV1, hint layer 2)
    shuffle = create_model("ShuffleV1", 100)
    sh_logits, sh_feats = features(shuffle, x)
    ctx_sh = TermContext(num_classes=100, num_samples=16, student=shuffle, teacher=teacher, device=torch.device("cpu"))
    fit = term("fitnet", ctx_sh, regressor="convreg").train()
    reg = util.ConvReg(sh_feats["stages"][2].shape, t_feats["stages"][2].shape)
    reg.load_state_dict(fit.convreg.state_dict())
    reg.train()
    ours = fit(step(sh_logits, t_logits, sh_feats, t_feats, targets))["fitnet"] / fit.params.weight
    out["fitnet"] = (ours, zoo.HintLoss()(reg(sh_feats["stages"][2]), t_feats["stages"][2]),
                     "RepDistiller distiller_zoo/FitNet.py HintLoss + models/util.py ConvReg (transposed conv)")

    at = term("at", ctx, stem=False, pairing="first")
    out["at"] = (at(st)["at"] / at.params.weight, sum(zoo.Attention()(fs[1:-1], ft[1:-1])),
                 "RepDistiller distiller_zoo/AT.py Attention, feat[1:-1]")
    out["dkd"] = (dkd_loss(s_logits, t_logits, targets, 1.0, 8.0, 4.0),
                  mdkd.dkd_loss(s_logits, t_logits, targets, 1.0, 8.0, 4.0),
                  "mdistiller distillers/DKD.py dkd_loss(alpha 1, beta 8, T 4)")
    probs = torch.rand(16, 1 + 64, generator=torch.Generator().manual_seed(1)) * 1e-3
    out["crd"] = (contrast_loss(probs, 50000), crd.ContrastLoss(50000)(probs.unsqueeze(-1)).squeeze(),
                  "RepDistiller crd/criterion.py ContrastLoss (the NCE objective on the same scores)")

    sp = term("sp", ctx)
    out["sp"] = (sp(st)["sp"] / sp.params.weight, sum(zoo.Similarity()([fs[-2]], [ft[-2]])),
                 "RepDistiller distiller_zoo/SP.py Similarity, feat[-2]")
    cc = term("cc", ctx)
    emb_s, emb_t = util.LinearEmbed(s_feats["pooled"].shape[1], 128), util.LinearEmbed(t_feats["pooled"].shape[1], 128)
    emb_s.linear.load_state_dict(cc.embed_s.state_dict())
    emb_t.linear.load_state_dict(cc.embed_t.state_dict())
    out["cc"] = (cc(st)["cc"] / cc.params.weight, zoo.Correlation()(emb_s(fs[-1]), emb_t(ft[-1])),
                 "RepDistiller distiller_zoo/CC.py Correlation + models/util.py LinearEmbed")
    vid = term("vid", ctx)
    theirs = 0
    for head, f_s, f_t in zip(vid.heads, fs[1:-1], ft[1:-1]):
        ref = zoo.VIDLoss(f_s.shape[1], f_t.shape[1], f_t.shape[1])
        ref.load_state_dict(head.state_dict())
        theirs = theirs + ref(f_s, f_t)
    out["vid"] = (vid(st)["vid"] / vid.params.weight, theirs, "RepDistiller distiller_zoo/VID.py VIDLoss per stage")
    out["rkd"] = (term("rkd", ctx)(st)["rkd"], zoo.RKDLoss()(fs[-1], ft[-1]),
                  "RepDistiller distiller_zoo/RKD.py RKDLoss(w_d 25, w_a 50)")
    pkt = term("pkt", ctx)
    out["pkt"] = (pkt(st)["pkt"] / pkt.params.weight, zoo.PKT()(fs[-1], ft[-1]), "RepDistiller distiller_zoo/PKT.py PKT")
    ab = term("ab", ctx)
    connector = util.Connector([f.shape for f in fs[1:-1]], [f.shape for f in ft[1:-1]])
    out["ab"] = (ab.init_loss(st), sum(zoo.ABLoss(3)(connector(fs[1:-1]), ft[1:-1])),
                 "RepDistiller distiller_zoo/AB.py ABLoss + models/util.py Connector (initialisation stage loss; same maps)")
    ft_term = term("ft", ctx)
    para = util.Paraphraser(ft[-2].shape)
    para.encoder.load_state_dict(ft_term.paraphraser.encoder.state_dict())
    para.decoder.load_state_dict({k.replace(k.split(".")[0], str(int(k.split(".")[0]) // 2 * 3), 1): v
                                  for k, v in ft_term.paraphraser.decoder.state_dict().items()})
    trans = util.Translator(fs[-2].shape, ft[-2].shape)
    trans.load_state_dict(ft_term.translator.state_dict())
    ft_term.train()
    trans.train()
    out["ft"] = (ft_term(st)["ft"] / ft_term.params.weight,
                 zoo.FactorTransfer()(trans(fs[-2]), para(ft[-2], is_factor=True)),
                 "RepDistiller distiller_zoo/FT.py FactorTransfer + models/util.py Paraphraser, Translator")
    out["ft (initialisation)"] = (ft_term.init_loss(st), F.mse_loss(para(ft[-2])[1], ft[-2]),
                                  "RepDistiller helper/pretrain.py: nn.MSELoss of the paraphraser's reconstruction")
    fsp = term("fsp", ctx)
    out["fsp"] = (fsp.init_loss(st), sum(zoo.FSP([f.shape for f in fs[:-1]], [f.shape for f in ft[:-1]])(fs[:-1], ft[:-1])),
                  "RepDistiller distiller_zoo/FSP.py FSP, feat[:-1] (initialisation stage loss)")
    nst = term("nst", ctx)
    out["nst"] = (nst(st)["nst"] / nst.params.weight, sum(zoo.NSTLoss()(fs[1:-1], ft[1:-1])),
                  "RepDistiller distiller_zoo/NST.py NSTLoss, feat[1:-1]")

    rows = {}
    for name, (ours, theirs, ref) in out.items():
        a, b = float(ours.detach()), float(torch.as_tensor(theirs).detach().reshape(()))
        rows[name] = {"kdrepro": a, "reference": b, "max_abs_diff": abs(a - b),
                      "max_rel_diff": abs(a - b) / max(abs(b), 1e-30), "reference_code": ref}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repdistiller", type=Path, required=True)
    parser.add_argument("--mdistiller", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/benchmarks"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = compare(args.repdistiller.resolve(), args.mdistiller.resolve())
    record = {"repdistiller_commit": commit(args.repdistiller), "mdistiller_commit": commit(args.mdistiller),
              "torch": torch.__version__, "dtype": "float32", "inputs": "resnet32x4 -> resnet8x4 (FitNets: -> "
              "ShuffleV1), random init, 16 random 32x32 images, seed 0", "terms": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "reference_terms.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# kdrepro's loss terms against the reference implementations", "",
             f"RepDistiller {record['repdistiller_commit']}, mdistiller {record['mdistiller_commit']}; torch "
             f"{record['torch']}, float32, CPU; {record['inputs']}. Written by `benchmarks/reference_terms.py`.", "",
             "| term | kdrepro | reference | max abs diff | max rel diff | reference code |", "|---|---:|---:|---:|---:|---|"]
    for name, r in rows.items():
        lines.append(f"| `{name}` | {r['kdrepro']:.8g} | {r['reference']:.8g} | {r['max_abs_diff']:.3g} | "
                     f"{r['max_rel_diff']:.3g} | {r['reference_code']} |")
    (args.out / "reference_terms.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
