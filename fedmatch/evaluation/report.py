"""The Markdown report of an evaluation, rendered from its summary dict alone.

Written for a reader such as a data-protection authority: what was measured, on what, at
which threshold, with sample sizes and 95% intervals next to every rate, what the worst-to-
best group ratios are, and what the numbers cannot show. Because it is rendered from the
summary (aggregates only), it cannot contain templates or per-image scores.
"""

from __future__ import annotations

from typing import Any

__all__ = ["render_report"]


def _cell(value: object) -> str:
    """Text safe inside a Markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _pct(r: float | None) -> str:
    if r is None:
        return "n/a"
    if r == 0:
        return "0 %"
    return f"{100 * r:.3g} %"


def _ci(ci: list[float] | None) -> str:
    if ci is None:
        return "n/a"
    return f"{_pct(ci[0])} to {_pct(ci[1])}"


def _thr(t: float | None) -> str:
    return "n/a" if t is None else f"{t:.6g}"


def _target_threshold(target: dict[str, Any]) -> str:
    if target["just_above"] is None:
        return _thr(target["threshold"])
    return f"just above {_thr(target['just_above'])}"


def _one_in(r: float | None) -> str:
    if not r:
        return ""
    return f" (about 1 in {1 / r:,.0f})" if r < 0.5 else ""


def _rate_row(name: str, r: dict[str, Any]) -> str:
    return f"| {name} | {r['errors']} | {r['trials']} | {_pct(r['rate'])} | {_ci(r['ci95'])} |"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _ratio_line(metric: str, result: dict[str, Any]) -> str:
    if result["ratio"] is not None:
        flag = " **FLAGGED: above 2**" if result["flagged"] else " (not above 2)"
        return (
            f"- {metric} worst-to-best ratio: **{result['ratio']:.3g}**{flag}; worst group "
            f"`{_cell(result['worst']['group'])}` ({_pct(result['worst']['rate'])}), best "
            f"`{_cell(result['best']['group'])}` ({_pct(result['best']['rate'])}), "
            f"{result['groups_compared']} groups compared."
        )
    flag = " **FLAGGED**" if result["flagged"] else ""
    return f"- {metric} worst-to-best ratio: not computed: {result['note']}.{flag}"


def _count_rate(r: dict[str, Any]) -> str:
    """``0.5 % (1 of 200)``; a zero shown with its upper bound, never as a bare 0."""
    if r["rate"] is None:
        return f"n/a (0 of {r['trials']})"
    if r["errors"] == 0:
        return f"0 of {r['trials']} (at most {_pct(r['ci95'][1])} at 95%)"
    return f"{_pct(r['rate'])} ({r['errors']} of {r['trials']})"


def _overview(s: dict[str, Any]) -> list[str]:
    data, fte, at = s["dataset"], s["failure_to_enrol"], s["at_threshold"]
    fed, ident, dedup = s["federation"], s["identification"], s["deduplication"]
    prov = s["provenance"]
    fpir = _pct(fed["fpir"]) + (" (upper bound)" if fed["fpir_is_upper_bound"] else "")
    rank1 = ident["rank_miss"][0]
    rows = [
        ["Software", f"fedmatch {prov['software_version']}"],
        ["Face model / detector", f"`{s['model_id']}` / `{prov['detector_id'] or 'n/a'}`"],
        ["Input digest", f"`{prov['input_digest'][:16]}…` (full value in `summary.json`)"],
        [
            "Copies counted once",
            f"{dedup['images_dropped']} of {dedup['images_listed']} listed images dropped",
        ],
        ["Operational threshold", f"{_thr(at['threshold'])} (match when similarity ≥ threshold)"],
        ["Images listed / enrolled", f"{data['images_listed']} / {data['images_enrolled']}"],
        [
            "People listed / enrolled",
            f"{data['identities_listed']} / {data['identities_enrolled']}",
        ],
        ["Genuine / impostor pairs", f"{data['genuine_pairs']} / {data['impostor_pairs']}"],
        ["Failure to enrol", _count_rate(fte)],
        ["False match rate at threshold", _count_rate(at["fmr"])],
        ["False non-match rate at threshold", _count_rate(at["fnmr"])],
        [f"Expected FPIR, {fed['records']:,} records", fpir],
        [
            f"1:N gallery ({ident['gallery']['distractors']:,} synthetic distractors)",
            f"{ident['gallery']['size']:,} entries",
        ],
        ["1:N FNIR at threshold", _count_rate(ident["at_threshold"]["fnir"])],
        ["1:N FPIR at threshold", _count_rate(ident["at_threshold"]["fpir"])],
        ["1:N rank-1 miss rate", _count_rate(rank1)],
        ["Flagged group differences", str(len(s["flags"]))],
        ["Group differences", s["fairness"]["statement"]],
    ]
    return _table(["Item", "Value"], rows)


HOW_TO_READ = (
    "Each photo is turned into a template by the face model; two templates are compared by "
    "cosine similarity, and the system declares a match when the similarity is at or above "
    "the threshold. A *genuine* pair is two photos of the same person, an *impostor* pair "
    "photos of two different people. The **false match rate (FMR)** is the share of impostor "
    "pairs wrongly declared a match; the **false non-match rate (FNMR)** the share of genuine "
    "pairs wrongly declared no match. **Failure to enrol** is the share of photos the model "
    "refused (no face, too small, too blurred...). Every rate comes with the number of pairs "
    "it was measured on and a 95% interval: the true rate is plausibly anywhere inside it, "
    "and a rate measured on few pairs says little. A search compares one probe with every "
    "record of every member state, so a small per-comparison FMR becomes a large chance of "
    "at least one false candidate (the **false positive identification rate, FPIR**) across "
    "millions of records. For each grouping attribute the report divides the highest group "
    "error rate by the lowest; ISO/IEC 19795-10 audits treat a ratio above 2 as a "
    "differential that needs attention."
)


def _dedup(d: dict[str, Any]) -> list[str]:
    with_copies, counted = d["pairs_with_copies"], d["pairs_counted"]
    return [
        "## Copies counted once",
        "",
        "A copy of a photo adds pairs but no evidence. Each picture is counted once (the "
        f"first listed); {d['images_dropped']} of {d['images_listed']} listed images were "
        "copies:",
        "",
        *_table(
            ["Rule", "Test", "Images dropped"],
            [[reason, d["rules"][reason], str(n)] for reason, n in d["dropped_by_reason"].items()],
        ),
        "",
        f"Pairs counted: {counted['genuine']:,} genuine, {counted['impostor']:,} impostor. "
        f"With the copies they would have been {with_copies['genuine']:,} genuine and "
        f"{with_copies['impostor']:,} impostor.",
        "",
    ]


def _identification(i: dict[str, Any]) -> list[str]:
    g, at, imp = i["gallery"], i["at_threshold"], i["impostor_scores"]
    out = [
        "## Identification (1:N) against a federation-sized gallery",
        "",
        f"Each probe is searched against a gallery of **{g['size']:,}** entries: "
        f"{g['enrolled_identities']} enrolled identities ({g['enrolment']}) and "
        f"{g['distractors']:,} **{g['distractor_kind']}** distractors "
        f"({g['distractor_recipe']}). {i['mated_searches']} mated searches (another photo of "
        "an enrolled person) give the false negative identification rate (FNIR: the mate is "
        f"not among the first {i['candidates']} candidates at or above the threshold) and "
        f"rank miss rates; {i['non_mated_searches']} non-mated searches (the person's own "
        "entry left out) give the false positive identification rate (FPIR: any candidate "
        "at or above the threshold).",
        "",
        "| Measure | Errors | Searches | Rate | 95% interval |",
        "|---|---|---|---|---|",
        _rate_row(f"FNIR at threshold {_thr(at['threshold'])}", at["fnir"]),
        _rate_row(f"FPIR at threshold {_thr(at['threshold'])}", at["fpir"]),
        *[_rate_row(f"Rank-{r['rank']} miss rate (no threshold)", r) for r in i["rank_miss"]],
        "",
        "| Target FPIR | Threshold | FPIR | FNIR | Shown |",
        "|---|---|---|---|---|",
    ]
    for e in i["at_fpir"]:
        if e["threshold"] is None:
            out.append(f"| {e['target_fpir']:g} | n/a | n/a | n/a | no |")
            continue
        out.append(
            f"| {e['target_fpir']:g} | {_thr(e['threshold'])} | {_count_rate(e['fpir'])} | "
            f"{_count_rate(e['fnir'])} | {'yes' if e['demonstrated'] else 'no'} |"
        )
    notes = [e["note"] for e in i["at_fpir"] if e["note"]]
    if notes:
        out += ["", f"Not shown: {notes[0]}."]
    if imp["real_mean"] is not None and imp["synthetic_mean"] is not None:
        out += [
            "",
            f"{i['note']} Here real impostor scores have mean {imp['real_mean']:.3f} and "
            f"standard deviation {imp['real_sd']:.3f}; synthetic distractors "
            f"{imp['synthetic_mean']:.3f} and {imp['synthetic_sd']:.3f}.",
        ]
    else:
        out += ["", i["note"]]
    return out


def render_report(s: dict[str, Any]) -> str:
    """The report for the summary ``s`` returned by :func:`fedmatch.evaluation.evaluate`."""
    settings, data = s["settings"], s["dataset"]
    fte, at, target, fed = s["failure_to_enrol"], s["at_threshold"], s["target"], s["federation"]
    out: list[str] = [
        f"# Accuracy and fairness evaluation of `{s['model_id']}`",
        "",
        f"Generated {s['generated_at']} by fedmatch (summary schema `{s['schema']}`). This "
        "report holds aggregate counts, rates and curves only: no photos, templates or "
        "per-image scores.",
        "",
        "## Summary",
        "",
        *_overview(s),
        "",
        "## How to read this report",
        "",
        HOW_TO_READ,
        "",
        "## Data set and settings",
        "",
        *_table(
            ["Item", "Value"],
            [
                [
                    "Software",
                    f"{s['provenance']['software']} {s['provenance']['software_version']}",
                ],
                ["Detector", f"`{s['provenance']['detector_id'] or 'not given'}`"],
                ["Input digest", f"`{s['provenance']['input_digest']}`"],
                ["Input digest covers", s["provenance"]["input_digest_covers"]],
                ["Images folder", f"`{data['images']}`"],
                ["Identities file", f"`{data['identities_csv']}`"],
                ["Groups file", f"`{data['groups_csv']}`" if data["groups_csv"] else "none"],
                [
                    "People with at least two enrolled photos",
                    str(data["identities_with_genuine_pairs"]),
                ],
                ["Face model", f"`{s['model_id']}`"],
                ["Operational threshold", _thr(settings["threshold"])],
                ["Decision rule", settings["decision_rule"]],
                ["Target FMR", f"{settings['target_fmr']:g}"],
                ["Federation size for FPIR", f"{settings['federation_records']:,} records"],
                [
                    "Minimum pairs per group",
                    f"{settings['min_genuine_pairs']} genuine, "
                    f"{settings['min_impostor_pairs']} impostor",
                ],
                ["Intervals", settings["interval"]],
            ],
        ),
        "",
        *_dedup(s["deduplication"]),
        "## Failure to enrol",
        "",
        "| Measure | Failures | Photos | Rate | 95% interval |",
        "|---|---|---|---|---|",
        _rate_row("Failure to enrol", fte),
        "",
    ]
    if fte["by_code"]:
        out += _table(["Reason code", "Photos"], [[c, str(n)] for c, n in fte["by_code"].items()])
        out.append("")

    out += [
        f"## Accuracy at the operational threshold ({_thr(at['threshold'])})",
        "",
        "| Measure | Errors | Pairs | Rate | 95% interval |",
        "|---|---|---|---|---|",
        _rate_row("False match rate (FMR)", at["fmr"]),
        _rate_row("False non-match rate (FNMR)", at["fnmr"]),
        "",
        f"## Threshold for the target FMR of {target['target_fmr']:g}",
        "",
    ]
    if target["threshold"] is None:
        out.append(f"Not derived: {target['note']}.")
    else:
        out += [
            f"The smallest threshold at which the observed FMR is at most "
            f"{target['target_fmr']:g} is **{_target_threshold(target)}** (exact value in "
            "`summary.json`).",
            "",
            "| Measure | Errors | Pairs | Rate | 95% interval |",
            "|---|---|---|---|---|",
            _rate_row("FMR at this threshold", target["fmr"]),
            _rate_row("FNMR at this threshold", target["fnmr"]),
            "",
            f"Target shown to be met (upper 95% bound within target): "
            f"**{'yes' if target['demonstrated'] else 'no'}**."
            + (f" {target['note']}." if target["note"] else ""),
        ]
    out += ["", "## False positive identification rate across the federation", ""]
    if fed["fpir"] is None:
        out.append(f"Not estimated: {fed['note']}.")
    else:
        kind = "an upper bound on" if fed["fpir_is_upper_bound"] else "an estimate of"
        out.append(
            f"A probe of a person who is in no register is compared with all "
            f"{fed['records']:,} records of the federation. At threshold "
            f"{_thr(fed['threshold'])}, FPIR = 1 − (1 − FMR)^N gives **{_pct(fed['fpir'])}**"
            f"{_one_in(fed['fpir'])}, {kind} the chance of at least one false candidate per "
            f"search ({fed['note']})."
        )
        if fed["fpir_upper_95"] is not None:
            out.append(f"With the upper 95% bound of FMR it is {_pct(fed['fpir_upper_95'])}.")
    out += [
        "",
        f"To keep FPIR at {fed['target_fpir']:g} across {fed['records']:,} records, the FMR "
        f"per comparison must be about {fed['fmr_needed_for_target_fpir']:.2g}; showing that "
        f"with zero observed false matches needs about "
        f"{fed['impostor_pairs_needed_to_show_it']:,} impostor pairs, the pairs of about "
        f"{fed['photos_needed_to_show_it']:,} photos of distinct people (this data set has "
        f"{data['impostor_pairs']:,}). The threshold must be set for the sum of all node "
        "galleries, not for one node.",
        "",
        *_identification(s["identification"]),
        "",
        "## Error rates across thresholds",
        "",
    ]
    out += _table(
        ["Threshold", "False matches", "FMR", "False non-matches", "FNMR"],
        [
            [
                _thr(r["threshold"])
                + (" (operational)" if r["threshold"] == at["threshold"] else ""),
                str(r["false_matches"]),
                _pct(r["fmr"]),
                str(r["false_non_matches"]),
                _pct(r["fnmr"]),
            ]
            for r in s["curve"]
        ],
    )
    out += [
        "",
        "## Figures",
        "",
        "The DET figure plots FNMR against FMR as the threshold moves (both axes "
        "logarithmic; lower left is better). Only measured operating points are drawn, each "
        "with its 95% interval on both rates; nothing is drawn between them. A rate of zero "
        "is not drawn on the axis: it is a bound marker (< or v) at the rate's upper 95% "
        'bound, labelled "0 of n". The circle is the operational threshold, the square the '
        "threshold for the target FMR (hollow markers at a bound when a rate there is 0).",
        "",
        f"![DET curve: FNMR against FMR]({s['files']['det']})",
        "",
    ]
    for attribute, file in s["files"]["det_by_attribute"].items():
        out += [
            f"The same per group of `{_cell(attribute)}` (pairs with both photos in the group):",
            "",
            f"![DET per group of {_cell(attribute)}]({file})",
            "",
        ]
    out += [
        "The score histograms show how far apart genuine and impostor similarities lie; the "
        "solid line is the operational threshold. Each histogram is scaled to area 1, so the "
        "two are comparable despite their different numbers of pairs.",
        "",
        f"![Histograms of genuine and impostor scores]({s['files']['scores']})",
        "",
        "## Differences between groups",
        "",
    ]
    if not s["groups"]:
        out.append("No groups file was given: no per-group rates.")
    for attribute in s["groups"]:
        out += [
            f"### {_cell(attribute['attribute'])}",
            "",
            "A pair counts for a group when both photos are in it. Groups marked "
            "insufficient are shown but left out of the ratios.",
            "",
        ]
        out += _table(
            [
                "Group",
                "Photos",
                "Failure to enrol",
                "Genuine pairs",
                "FNMR",
                "FNMR 95%",
                "Impostor pairs",
                "FMR",
                "FMR 95%",
                "Status",
            ],
            [
                [
                    g["value"],
                    str(g["images"]),
                    _pct(g["failure_to_enrol"]["rate"]),
                    str(g["fnmr"]["trials"]),
                    _pct(g["fnmr"]["rate"]),
                    _ci(g["fnmr"]["ci95"]),
                    str(g["fmr"]["trials"]),
                    _pct(g["fmr"]["rate"]),
                    _ci(g["fmr"]["ci95"]),
                    g["status"] + (f" ({g['status_note']})" if g["status_note"] else ""),
                ]
                for g in attribute["groups"]
            ],
        )
        out += [
            "",
            _ratio_line("FNMR", attribute["fnmr_ratio"]),
            _ratio_line("FMR", attribute["fmr_ratio"]),
        ]
        if attribute["images_without_value"]:
            out.append(
                f"- {attribute['images_without_value']} photo(s) have no value for this "
                "attribute and are in none of its groups."
            )
        out.append("")
    fair = s["fairness"]
    out += ["", "## Flags", ""]
    out += [f"- {_cell(f)}" for f in s["flags"]]
    out.append(fair["statement"])
    out += [f"- Not computed: {r['ratio']}: {_cell(r['reason'])}." for r in fair["not_computed"]]
    out += ["", "## Limitations", ""]
    out += [f"- {note}" for note in s["limitations"]]
    return "\n".join(out) + "\n"
