from search.db import docs


def test_docs_database_md_is_the_rendering_of_the_schema():
    assert docs.PATH.read_text(encoding="utf-8") == docs.render(), \
        "docs/DATABASE.md is stale: run python -m search.db.docs"
