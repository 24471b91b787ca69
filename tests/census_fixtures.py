"""Small spreadsheets in the Census NAICS layout, written by the tests themselves."""
from __future__ import annotations

import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

from naics_pipeline.data.source import file_names

# Generated trees are not an official NAICS vintage: they carry a year of their own, so the checks hold
# them to the structural rules only (the official shapes are for 2017 and 2022).
TEST_VINTAGE = "2099"

CODES = [
    ("11", "Agriculture, Forestry, Fishing and Hunting"), ("111", "Crop Production"),
    ("1111", "Oilseed and Grain Farming"), ("11111", "Soybean Farming"), ("111110", "Soybean Farming"),
    ("11112", "Oilseed (except Soybean) Farming"), ("111120", "Oilseed (except Soybean) Farming"),
    ("112", "Animal Production"), ("1121", "Cattle Ranching and Farming"),
    ("11211", "Beef Cattle Ranching and Farming"), ("112111", "Beef Cattle Ranching and Farming"),
    ("112112", "Cattle Feedlots"),
    ("31-33", "Manufacturing"), ("311", "Food Manufacturing"), ("3111", "Animal Food Manufacturing"),
    ("31111", "Animal Food Manufacturing"), ("311111", "Dog and Cat Food Manufacturing"),
    ("311119", "Other Animal Food Manufacturing"), ("312", "Beverage Manufacturing"),
    ("3121", "Beverage Manufacturing"), ("31211", "Soft Drink Manufacturing"),
    ("312111", "Soft Drink Manufacturing"),
    ("54", "Professional, Scientific, and Technical Services"),
    ("541", "Professional, Scientific, and Technical Services"),
    ("5415", "Computer Systems Design and Related Services"),
    ("54151", "Computer Systems Design and Related Services"),
    ("541511", "Custom Computer Programming Services"), ("541512", "Computer Systems Design Services"),
]

DESCRIPTIONS = {
    "11": "The Sector as a Whole\n\nThe Agriculture sector comprises farms.\n\nExcluded from this sector are "
          "research farms. These establishments are classified in Industry 54151, Computer Systems Design.",
    "311": "Industries in the Food Manufacturing subsector transform livestock.\n\nEstablishments primarily "
           "engaged in manufacturing beverages are classified in Subsector 312, Beverage Manufacturing.\n",
    "31211": "NULL",
    "541511": "This U.S. industry comprises establishments writing custom software.\n\n"
              "Cross-References. Establishments primarily engaged in--",
    "541512": "This U.S. industry comprises establishments   planning computer systems.\n\nCross-References.",
}

INDEX = {
    "111110": ["Soybean farming", "Soybean seed production", "Soybeans, growing", "Bean farming, soy",
               "Soy farm"],
    "111120": ["Canola farming", "Flaxseed farming"],
    "541511": ["Custom programming", "Software development, custom", "Programming services, computer",
               "Web page programming", "Applications software programming", "Robot programming"],
    "541512": ["Systems integration design", "LAN design services"],
    "312111": ["Soda manufacturing"],
}


def xlsx_bytes(rows: list[list], sheet: str = "Sheet1") -> bytes:
    """A minimal valid .xlsx (inline strings, numbers as numbers)."""
    def cell(ref, v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return f'<c r="{ref}"><v>{v}</v></c>'
        return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{escape(str(v))}</t></is></c>'

    def col(i):
        return chr(ord("A") + i)

    body = "".join(
        f'<row r="{r + 1}">' + "".join(cell(f"{col(c)}{r + 1}", v) for c, v in enumerate(row)) + "</row>"
        for r, row in enumerate(rows))
    ns = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    files = {
        "[Content_Types].xml": '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/xl/workbook.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/><Override PartName="/xl/worksheets/sheet1.xml" ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>',
        "_rels/.rels": f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{rel}/officeDocument" Target="xl/workbook.xml"/></Relationships>',
        "xl/workbook.xml": f'<?xml version="1.0" encoding="UTF-8"?><workbook {ns} xmlns:r="{rel}"><sheets><sheet name="{escape(sheet)}" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": f'<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<?xml version="1.0" encoding="UTF-8"?><worksheet {ns}><sheetData>{body}</sheetData></worksheet>',
    }
    import io
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, text in files.items():  # fixed timestamps: same rows, same bytes
            z.writestr(zipfile.ZipInfo(name, date_time=(2022, 1, 1, 0, 0, 0)), text, zipfile.ZIP_DEFLATED)
    return buf.getvalue()


def _num(code: str):
    return float(code) if code.isdigit() else code


def census_rows(codes=CODES, descriptions=DESCRIPTIONS, index=INDEX, cross_references=None,
                vintage: str = TEST_VINTAGE) -> dict[str, list[list]]:
    """Each role's rows as the Census lays them out, headers included (the official codes file has an
    empty row right after its header)."""
    rows = {
        "codes": [["Seq. No.", f"{vintage} NAICS US   Code", f"{vintage} NAICS US Title", "", ""], ["", "", "", "", ""]]
                 + [[float(i + 1), _num(c), t + " ", "", ""] for i, (c, t) in enumerate(codes)],
        "descriptions": [["Code", "Title", "Description"]]
                        + [[_num(c), t + "T", descriptions.get(c, f"This industry comprises {t.lower()}.")]
                           for c, t in codes],
        "index": [[f"NAICS{vintage[2:]}", "INDEX ITEM DESCRIPTION"]]
                 + [[float(c), e] for c, entries in index.items() for e in entries]
                 + [["******", "Dealers -- see type "]],
    }
    if cross_references:
        rows["cross_references"] = [["Code", "Cross-Reference"]] + [[float(c), t] for c, t in cross_references]
    return rows


def write_census_folder(folder: Path, vintage: str = TEST_VINTAGE, **kwargs) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for role, rows in census_rows(vintage=vintage, **kwargs).items():
        (folder / file_names(vintage)[role]).write_bytes(xlsx_bytes(rows))
    return folder


def rename_vintage(folder: Path, old: str, new: str) -> Path:
    """Move a folder's files of vintage `old` to the Census names of vintage `new` (same bytes)."""
    for role, name in file_names(old).items():
        if (folder / name).exists():
            (folder / name).rename(folder / file_names(new)[role])
    return folder


def synthetic_codes(sectors=("11", "21", "54"), fanout=3) -> list[tuple[str, str]]:
    """A regular NAICS-shaped tree: each code has `fanout` children down to 6 digits."""
    out = []

    def walk(code):
        out.append((code, f"Industry {code}"))
        if len(code) < 6:
            for i in range(1, fanout + 1):
                walk(code + str(i))
    for s in sectors:
        walk(s)
    return out


def prepared_store(tmp: Path):
    """Tables of a generated tree, one sampling index `all` (every level, buckets 1 and 6) and hashing
    text embeddings: what a training test needs. Returns (layout, descriptions, embeddings)."""
    import pyarrow.parquet as pq

    from naics_pipeline.curricula.config import parse_curriculum
    from naics_pipeline.curricula.index_builder import build_index
    from naics_pipeline.data import pipeline
    from naics_pipeline.encoders import build_text_embeddings
    from naics_pipeline.layout import Layout

    layout = Layout(tmp / "store")
    pipeline.build_data(layout, str(write_census_folder(tmp / "census")))
    desc = pq.read_table(layout.descriptions)
    c = parse_curriculum({"name": "all", "positive_levels": [2, 3, 4, 5, 6], "difficulty_buckets": [1, 6],
                          "bucket_percentages": {1: 0.5, 6: 0.5}, "k_negatives": 4})
    build_index(c, desc, layout.distances, layout.triplets, layout.sampling_index("all"))
    return layout, desc, build_text_embeddings(desc, pq.read_table(layout.index_holdout), "hashing")


def trained_store(tmp: Path, epochs: int = 1):
    """prepared_store with its text embeddings saved and one small stage, stage_1, trained on every pair:
    a storage root that classify and serve can load. Returns the layout."""
    from naics_pipeline.training.loop import TrainConfig, train_stage
    from naics_pipeline.training.model import ModelConfig

    layout, desc, emb = prepared_store(tmp)
    emb.save(layout.text_embeddings)
    train_stage("stage_1", layout.sampling_index("all"), emb, desc, layout.stage_dir("stage_1"),
                ModelConfig(hidden_dim=32, embedding_dim=8),
                TrainConfig(epochs=epochs, batch_size=64, max_pairs_per_epoch=0, accelerator="cpu", devices=1,
                            progress_bar=False, val_fraction=0.1), log=lambda *_: None)
    return layout
