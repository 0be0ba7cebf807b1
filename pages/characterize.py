"""Characterize an upload: validate the file, enqueue a job, watch it, see where it lands."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.access import write_note
from app.navigation import page_setup
from app.resources import blob_store, capabilities, get_store
from app.text import literal
from app.uploads import discard_upload, validated_upload
from app.widgets import detail_url, explained
from app.worker import ensure_background_worker
from carlos.characterize import fingerprints, jobs, results
from carlos.characterize.engine import PROTOCOLS
from carlos.config import Thresholds
from carlos.core.comparability import comparability
from carlos.pagemodels.characterize import read_job, read_recent_jobs
from carlos.search import lookup
from carlos.search.capabilities import sdxl_weights
from carlos.viz.adaptive import narrowing_figure

user = page_setup()
st.title("Characterize an upload")
st.caption(
    "Generates images with and without the LoRA (same prompts and seeds), embeds both with "
    "CLIP and stores Direction, Strength and Consistency. Only .safetensors files are accepted; "
    "nothing is ever unpickled."
)
store = get_store()
caps = capabilities()
sdxl = sdxl_weights()
sdxl_ok = sdxl.available and caps.clip_weights.available
backends = {
    "tiny": "tiny — DEMO: random-weight pipeline, the numbers mean nothing",
    "sdxl": "sdxl — SDXL base 1.0 + CLIP ViT-B/32 (the corpus's space)"
    + ("" if sdxl_ok else f" — unavailable: {sdxl.detail if not sdxl.available else caps.clip_weights.detail}"),
}
write_note(user)

upload = st.file_uploader("LoRA file (.safetensors)", type=None, disabled=not user.can_write)
c1, c2, c3 = st.columns(3)
backend = c1.radio("Backend", list(backends), format_func=backends.get)
protocol = c2.radio(
    "Protocol", list(PROTOCOLS), index=2 if backend == "tiny" else 1, format_func=lambda p: f"{p}: {PROTOCOLS[p].description}"
)
trigger = c3.text_input(
    "Trigger words, separated by commas",
    max_chars=400,
    help="Each LoRA prompt gets ', word' appended for every word, in order (as the CARLoS authors send "
    "Civitai's trainedWords); the base images never get them.",
)
if backend == "tiny":
    st.warning(
        "The tiny backend is a test and demo pipeline with random weights. Its Strength and "
        "Consistency show that the flow works; they say nothing about the LoRA."
    )
elif not sdxl_ok:
    st.error(
        f"The sdxl backend needs SDXL base 1.0 and CLIP ViT-B/32 weights on this machine "
        f"({sdxl.detail}; {caps.clip_weights.detail}). See the README, section *Real model weights*."
    )
    st.stop()
if backend == "sdxl" and not caps.gpu.available:
    st.warning("No GPU: full-size SDXL on the CPU takes minutes per image (the worker logs an estimate).")

if upload is None:
    discard_upload()
else:
    kept = validated_upload(upload, backend)  # copied and hashed once per file, not per rerun
    path, report = kept.path, kept.report
    st.subheader("Validation report")
    st.caption(f"File: {literal(upload.name)}")  # the uploader's name for it: shown as its characters
    if report.ok:
        st.success(
            f"{report.format} LoRA for {report.base_family.upper()}, {report.n_tensors} tensors, "
            f"rank {report.rank}, sha256 `{report.sha256[:16]}…`"
        )
    else:
        st.error(f"Refused: {literal(report.error)}")
    for c in report.contradictions:
        st.warning(f"Declared metadata contradicts the tensors: {literal(c)}")
    for w in report.warnings:
        st.caption(f"⚠️ {literal(w)}")
    known = lookup.by_sha256(store, report.sha256) if report.sha256 else None
    if known:
        st.info(f"This exact file was uploaded before: [{literal(known)}]({detail_url(known)}).")
    weight_links, weight_note = fingerprints.upload_matches(store, path, report, limits=jobs.limits_for(backend))  # before any GPU work
    for m in weight_links:
        alert = st.error if m.status in ("flagged", "escalated") else st.warning
        alert(f"Weights: {literal(m.text)} (cosine {m.cosine:.4f}) · [open]({detail_url(m.lora_id)})")
    if weight_note:
        st.caption(literal(weight_note))
    with st.expander("Declared metadata"):
        st.json(report.metadata or {})
    if report.ok and st.button("Enqueue characterization", type="primary", key="char_enqueue", disabled=not user.can_write):
        with explained("enqueue the job"):
            sub = jobs.submit(
                store,
                path,
                backend=backend,
                protocol=protocol,
                trigger=[w.strip() for w in trigger.split(",") if w.strip()],
                original_name=upload.name,
                user=user,
                blobs=blob_store(),
            )
            st.session_state["char_job"] = sub.job_id
            if sub.duplicate_of_job is not None:
                st.info(f"An identical job (#{sub.job_id}) already exists; showing it.")


@st.fragment(run_every=2.0)
def progress_panel() -> None:
    """Live job progress, refreshed every 2 s without rerunning the page."""
    job_id = st.session_state.get("char_job")
    if job_id is None:
        return
    panel = read_job(store, job_id)  # one store session per refresh
    job = panel.job
    if job is None:
        return
    st.subheader(f"Job #{job_id}: {job['status']}")
    st.progress(job["done"] / max(job["total"], 1), text=f"{job['done']} of {job['total']} pairs")
    live = panel.adaptive  # adaptive: the rule's state after each round
    if live is not None:
        (st.success if live.stopped else st.info)(live.message)
        if len(live.rounds):
            st.plotly_chart(narrowing_figure(live.rounds, live.thresholds), key="adaptive_rounds")
    if job["status"] in ("queued", "running"):
        ensure_background_worker()
        if st.button("Cancel job", key="char_cancel", disabled=not user.can_write):
            with explained("cancel the job"):
                jobs.cancel(store, job_id, user)
    elif job["status"] == "failed":
        st.error(f"Failed: {literal(job['error'])}")
    elif job["status"] == "finished":
        rep = panel.representation
        if rep is not None:
            c = st.columns(3)
            c[0].metric("Strength", f"{rep.strength:.3f}")
            c[1].metric("Consistency", f"{rep.consistency:.4f}")
            c[2].metric("Pairs", rep.n_samples)
            iv = results.interval_fields(rep, Thresholds())
            st.caption(f"Strength {iv['strength_text']}; Consistency {iv['consistency_text']}; risk class {iv['risk_confidence']}.")
            st.caption(f"Compared with the corpus: {comparability(rep.embedder, rep.provenance).message()}.")
            st.page_link(
                "pages/detail.py",
                label="Open its detail page (neighbours, per-category Strength, image pairs, flags)",
                icon="🔬",
                query_params={"lora": job["lora_id"]},
            )
            if rep.embedder.startswith("tiny"):
                st.caption("Demo space (tiny CLIP): it is not placed on the corpus's scatter or map.")
            else:
                st.caption("It now appears on the Risk scatter and the Map with the corpus.")


progress_panel()
recent = read_recent_jobs(store)
if len(recent):
    st.subheader("Recent jobs")
    st.dataframe(
        pd.DataFrame(recent)[
            ["job_id", "lora_id", "backend", "protocol", "status", "done", "total", "requested_by", "created_at", "error"]
        ],
        hide_index=True,
        width="stretch",
    )
