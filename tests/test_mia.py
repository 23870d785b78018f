"""Membership-inference audit: TPR at 1% FPR on a hand example, AUC near 0.5 for samples of the
data's distribution and 1.0 for a model that copies its training set, the families' own attacks
(deterministic, and exposing an overfit model), and `genforge eval` writing the values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from genforge.cli import app
from genforge.core.errors import ConfigError
from genforge.evaluate.memorisation import pixels
from genforge.evaluate.privacy.config import MembershipConfig
from genforge.evaluate.privacy.membership import Records, audit, family_attack, roc_summary, tpr_at_fpr
from genforge.models.pipeline import from_uint8
from privacy_fixtures import replay_run
from test_eval_fixtures import squares, squares_dataset, tiny_run


@pytest.fixture(autouse=True)
def one_thread():
    # tiny networks: a second intra-op thread only contends on the shared 2-core machine
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tpr_at_1fpr_and_auc_on_a_hand_example() -> None:
    non = np.arange(100.0)  # non-member scores 0..99
    mem = np.array([150, 120, 99.5, 98.5, 50, 10, 5, 0.5, -5, -10])
    # 1% of 100 non-members is one false positive: a threshold of 98.5 lets non-member 99 through
    # and catches 150, 120, 99.5 and 98.5; with no false positive only the first three
    assert tpr_at_fpr(mem, non, 0.01) == 0.4
    assert tpr_at_fpr(mem, non, 0.0) == 0.3
    # AUC = P(member score > non-member score), ties counted half
    pairs = (mem[:, None] > non[None, :]).mean() + 0.5 * (mem[:, None] == non[None, :]).mean()
    summary = roc_summary(mem, non)
    assert summary["auc"] == pytest.approx(pairs) and summary["tpr_at_1fpr"] == 0.4
    # tied scores move together: no threshold passes the members at 5 without both non-members at 5
    assert tpr_at_fpr(np.array([5.0, 5.0]), np.r_[np.zeros(98), 5.0, 5.0], 0.01) == 0.0
    assert tpr_at_fpr(np.array([5.0, 5.0]), np.r_[np.zeros(98), 5.0, 5.0], 0.02) == 1.0


def _records(members: np.ndarray, nonmembers: np.ndarray, labels: np.ndarray | None) -> Records:
    member = np.r_[np.ones(len(members), bool), np.zeros(len(nonmembers), bool)]
    data = from_uint8(np.concatenate([members, nonmembers]))
    return Records(data, None if labels is None else torch.from_numpy(labels), member)


def test_distance_attack_is_at_chance_for_the_data_distribution_and_exact_for_a_memoriser() -> None:
    members, m_labels = squares(400, seed=0)
    nonmembers, n_labels = squares(400, seed=1)
    fresh, f_labels = squares(1000, seed=2)  # "generated": the same distribution, neither set
    labels = np.r_[m_labels, n_labels]
    records = _records(members, nonmembers, labels)
    rec_px = pixels(np.concatenate([members, nonmembers]))
    cfg = MembershipConfig()
    for sample_labels in (f_labels, None):  # class-wise and plain nearest sample
        res = audit(records, cfg, 0, spaces={"pixels": (pixels(fresh), rec_px)}, sample_labels=sample_labels)
        assert 0.42 < res.values["mia_auc"] < 0.58, res.details
        assert res.values["mia_tpr_at_1fpr"] < 0.06
    # a memoriser: its samples are the members themselves
    copy = audit(records, cfg, 0, spaces={"pixels": (pixels(members), rec_px)}, sample_labels=m_labels)
    assert copy.values == {"mia_auc": 1.0, "mia_tpr_at_1fpr": 1.0}
    att = copy.details["attacks"]["distance_pixels"]
    assert "of the record's class" in att["kind"] and copy.details["best_attack"] == "distance_pixels"
    assert copy.details["members"] == copy.details["non_members"] == 400


def test_unknown_attack_names_list_the_available_ones() -> None:
    images, labels = squares(20, seed=0)
    records = _records(images[:10], images[10:], labels)
    spaces = {"pixels": (pixels(images), pixels(images))}
    with pytest.raises(ConfigError, match="nope.*available here: distance_pixels, vae_"):
        audit(records, MembershipConfig(attacks=["nope"]), 0, spaces=spaces, model=_tiny_models()["vae"])
    res = audit(records, MembershipConfig(attacks=["distance_pixels"]), 0, spaces=spaces, model=_tiny_models()["vae"])
    assert set(res.details["attacks"]) == {"distance_pixels"}


def _tiny_models() -> dict[str, torch.nn.Module]:
    from genforge.models.diffusion.model import DDPM
    from genforge.models.gan import DCGAN
    from genforge.models.vae import ConditionalVAE

    torch.manual_seed(0)
    return {
        "gan": DCGAN(DCGAN.default_config(16, 1, num_classes=4, g_widths=[16, 8], d_widths=[8, 16])),
        "vae": ConditionalVAE(ConditionalVAE.default_config(16, 1, num_classes=4, widths=[8, 16], latent_dim=4)),
        "diffusion": DDPM(DDPM.default_config(16, 1, 0, base_channels=8, timesteps=100)),
    }


def test_family_attacks_score_every_record_deterministically() -> None:
    members, m_labels = squares(12, seed=0)
    nonmembers, n_labels = squares(12, seed=1)
    records = _records(members, nonmembers, np.r_[m_labels, n_labels])
    cfg = MembershipConfig(draws=2, batch_size=7)  # batches that split the records unevenly
    expected = {"gan": {"gan_discriminator"}, "vae": {"vae_elbo", "vae_reconstruction"},
                "diffusion": {"diffusion_loss_t2", "diffusion_loss_t10", "diffusion_loss_t30", "diffusion_loss_mean"}}  # fmt: skip
    for family, model in _tiny_models().items():
        res = audit(records, cfg, 5, model=model)
        assert set(res.details["attacks"]) == expected[family], family
        again = audit(records, cfg, 5, model=model)
        assert res.details == again.details, family
        whole = audit(records, MembershipConfig(draws=2, batch_size=24), 5, model=model)
        for name, a in res.details["attacks"].items():  # a record's score does not depend on its batch
            assert a["auc"] == pytest.approx(whole.details["attacks"][name]["auc"]), (family, name)
        assert 0 <= res.values["mia_auc"] <= 1 and res.details["attacks"][next(iter(expected[family]))]["family"] == family
    # a conditional model needs labelled records for its own attacks
    gan = _tiny_models()["gan"]
    res = audit(_records(members, nonmembers, None), cfg, 5, model=gan)
    assert not res.details["attacks"] and "unlabelled" in res.warnings[0]


def test_vae_attack_exposes_an_overfit_model() -> None:
    from genforge.models.base import Batch
    from genforge.models.vae import VAE

    members, _ = squares(16, seed=0)
    nonmembers, _ = squares(16, seed=1)
    torch.manual_seed(0)
    # a weak KL term and 150 full-batch epochs on 16 images: the model memorises them (~3 s)
    model = VAE(VAE.default_config(16, 1, widths=[8, 16], latent_dim=8, beta=0.1))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    batch = Batch(from_uint8(members))
    for step in range(150):
        loss = model.training_step("main", batch, step).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    res = audit(_records(members, nonmembers, None), MembershipConfig(), 0, model=model)
    attacks = res.details["attacks"]
    assert attacks["vae_reconstruction"]["auc"] > 0.9 and attacks["vae_elbo"]["auc"] > 0.8, attacks
    assert res.values["mia_auc"] == attacks["vae_reconstruction"]["auc"]


def test_text_loss_attack() -> None:
    from genforge.models.text.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16))
    windows = torch.randint(0, 11, (10, 9))
    scores = family_attack("transformer").score(model.eval(), Records(windows, None, np.arange(10) < 5),
                                                MembershipConfig(batch_size=3), 0)  # fmt: skip
    with torch.no_grad():
        expected = -model.nll(windows).mean(1).double().numpy()
    np.testing.assert_allclose(scores["text_loss"], expected, rtol=1e-6)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    from genforge.evaluate.extractors import classifier

    # a small evaluator keeps the test fast (its config enters the cache key like any other)
    monkeypatch.setattr(classifier.ClassifierConfig.__init__, "__defaults__", (2, 32, 3e-3, 8, 16, 0))
    return tmp_path, squares_dataset(tmp_path / "ds")


def test_eval_cli_audits_a_memoriser_and_a_generalising_run(env) -> None:
    tmp, ds = env
    args = ["--ref", str(ds), "--n", "400", "--features", "classifier", "--metric", "fid", "--no-memorisation",
            "--no-tstr", "--mia-n", "150"]  # fmt: skip
    copy = replay_run(tmp / "replay", ds)
    res = CliRunner().invoke(app, ["eval", str(copy), *args])
    assert res.exit_code == 0, res.output
    m = json.loads((copy / "metrics.json").read_text())
    assert m["values"]["mia_auc"] == 1.0 and m["values"]["mia_tpr_at_1fpr"] == 1.0
    rec = m["metrics"]["mia_auc"]
    assert rec["better"] == "lower" and set(rec["details"]["attacks"]) == {"distance_pixels", "distance_features"}
    assert rec["details"]["members"] == 150 and rec["details"]["nonmember_split"] == "val"
    fresh = tiny_run(tmp / "fresh", ds)  # draws new squares: nothing of the train split
    res = CliRunner().invoke(app, ["eval", str(fresh), *args])
    assert res.exit_code == 0, res.output
    v = json.loads((fresh / "metrics.json").read_text())["values"]
    assert v["mia_auc"] < 0.65 and v["mia_tpr_at_1fpr"] < 0.1


def test_text_audit_scores_token_windows_of_both_splits(tmp_path) -> None:
    from genforge.data.canonical import open_dataset
    from genforge.data.ingesters import ingest
    from genforge.evaluate.privacy.text import text_membership
    from genforge.models.text.gpt import GPT, GPTConfig
    from genforge.models.text.pipeline import TextPipeline

    rng = np.random.default_rng(0)
    words = "the king queen sword love night day my lord good sir heart".split()
    (tmp_path / "plays.txt").write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(300)) + "\n")
    ingest(str(tmp_path / "plays.txt"), tmp_path / "ds", {"split_by": "position"}, modality="text")
    ds = open_dataset(tmp_path / "ds")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=ds.vocab_size, block_size=15, n_layer=1, n_head=2, n_embd=16)).eval()
    pipe = TextPipeline(model=model, info={"model": "gpt"}, path=tmp_path, tokenizer=ds.tokenizer)
    res = text_membership(pipe, ds, "val", MembershipConfig(n=12, batch_size=5), seed=1)
    assert res.details["members"] == res.details["non_members"] == 12 and res.details["window_tokens"] == 16
    assert set(res.details["attacks"]) == {"text_loss"} and 0 <= res.values["mia_auc"] <= 1
    assert res.details["tokens_from"] == "the dataset's tokens"
    # the same windows scored by hand: the first member window is window i of the train tokens
    from genforge.evaluate.privacy.membership import draw_pairs

    train, val = np.asarray(ds.split("train").tokens), np.asarray(ds.split("val").tokens)
    mi, ni = draw_pairs(len(train) // 16, len(val) // 16, 12, 1)
    windows = torch.from_numpy(np.stack([train[i * 16 : i * 16 + 16] for i in mi] + [val[i * 16 : i * 16 + 16] for i in ni]).astype(np.int64))
    with torch.no_grad():
        scores = -model.nll(windows).mean(1).double().numpy()
    assert res.details["attacks"]["text_loss"]["auc"] == pytest.approx(roc_summary(scores[:12], scores[12:])["auc"])


def test_private_scenario_chains_dp_training_tstr_and_the_audit(tmp_path, monkeypatch) -> None:
    from genforge.data.sources.glyphs import GlyphsOptions
    from genforge.evaluate.extractors import classifier
    from genforge.evaluate.privacy.utility import UtilityRecipe
    from genforge.scenarios.schema import load_scenario

    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    # small evaluator and TSTR recipes keep the test fast (both enter their cache keys)
    monkeypatch.setattr(classifier.ClassifierConfig.__init__, "__defaults__", (2, 32, 3e-3, 8, 16, 0))
    monkeypatch.setattr(UtilityRecipe.__init__, "__defaults__", (2, 64, 3e-3, 8, 16, 0))
    # and 20 public glyphs per digit instead of 1,000 (limit, per_class, seed, layout, slant)
    monkeypatch.setattr(GlyphsOptions.__init__, "__defaults__", (None, 20, 0, "free", 0.0))
    # and a feature net trained 20 classifier steps instead of 1,500 (FeatureNetConfig's 6th field)
    from genforge.models.mmd import FeatureNetConfig

    defaults = list(FeatureNetConfig.__init__.__defaults__)
    defaults[5] = 20
    monkeypatch.setattr(FeatureNetConfig.__init__, "__defaults__", tuple(defaults))
    gates = {g.metric for g in load_scenario("private").evaluate.gates}
    assert gates == {"dp_epsilon", "tstr_accuracy", "mia_auc"}
    out = tmp_path / "private"
    # the shipped digits source, 4 DP steps (the preset trains 5 minutes): every stage, not the quality
    res = CliRunner().invoke(app, ["run", "--scenario", "private", "--out", str(out), "--steps", "4"])
    assert res.exit_code in (0, 1), res.output
    summary = json.loads((out / "summary.json").read_text())
    values = {g["metric"]: g["value"] for g in summary["gates"]}
    assert 0 < values["dp_epsilon"] <= 10 and 0 <= values["tstr_accuracy"] <= 1 and 0 <= values["mia_auc"] <= 1
    # the public base (--steps budgets it too) cost no epsilon; the private run started from it
    assert summary["public"]["epsilon_spent"] == 0.0 and summary["public"]["train"]["step"] == 4
    base = json.loads((out / "public" / "base" / "model.json").read_text())
    assert base["statistics"]["feature_net"].startswith("trained on this run's data (20 classifier steps)")
    assert json.loads((out / "model.json").read_text())["init_from"]["path"] == summary["public"]["base_run"]
    m = json.loads((out / "metrics.json").read_text())
    attacks = set(m["metrics"]["mia_auc"]["details"]["attacks"])
    assert attacks == {"distance_pixels", "distance_features", "mmd_target", "mmd_feature_loss"}
    html = (out / "report.html").read_text()
    assert "Differential privacy" in html and "Membership-inference AUC" in html and "TSTR" in html
    assert "Fine-tuned from the base run" in html


def test_non_finite_scores_rank_lowest_with_a_warning() -> None:
    from genforge.evaluate.privacy.membership import FAMILY_ATTACKS, FamilyAttack

    class Broken(torch.nn.Module):
        family = "broken_for_test"

    if "broken_for_test" not in FAMILY_ATTACKS:
        # members score nan/inf, non-members finite: treated as the lowest scores, the AUC is 0
        FAMILY_ATTACKS.register("broken_for_test", FamilyAttack("broken_", lambda m, r, c, s: {
            "broken_score": np.where(r.member, np.nan, 1.0) + np.where(np.arange(len(r)) == 0, np.inf, 0.0)}, "test"))
    res = audit(Records(None, None, np.arange(8) < 4), MembershipConfig(), 0, model=Broken())
    assert res.values["mia_auc"] == 0.0 and "4 non-finite scores" in res.warnings[0]
