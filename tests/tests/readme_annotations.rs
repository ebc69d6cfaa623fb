//! The README's annotation table says what the code does: every annotation
//! of ingress-nginx's user guide is in it exactly once, and each row's word
//! matches how the model treats the annotation (`annotations::treatment`):
//! yes, differs and no effect are implemented; fails closed, refused and no
//! are what the model does with them. A row that says more than the code
//! does, or an annotation left out, fails here.

use std::collections::BTreeMap;

use ingress_model::{
    affinity::AFFINITY_ANNOTATIONS,
    annotations::{Treatment, treatment},
    canary::CANARY_ANNOTATIONS,
    migration::INGRESS_NGINX_ANNOTATIONS,
};

/// Annotation name -> the README's word for it.
fn readme_table() -> BTreeMap<String, String> {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("### Annotations\n")
        .nth(1)
        .and_then(|rest| rest.split("\n### ").next())
        .expect("the README has an Annotations section");
    let mut table = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (names, word) = (cells[1], cells[2]);
        for name in names.split('`').skip(1).step_by(2) {
            let previous = table.insert(name.to_owned(), word.to_owned());
            assert!(previous.is_none(), "{name} is in two rows");
        }
    }
    table
}

#[test]
fn the_readme_table_names_every_annotation_once() {
    let table = readme_table();
    for name in INGRESS_NGINX_ANNOTATIONS {
        assert!(
            table.contains_key(*name),
            "{name} is missing from the README's table"
        );
    }
    for name in table.keys() {
        assert!(
            INGRESS_NGINX_ANNOTATIONS.contains(&name.as_str()),
            "{name} in the README is no annotation of ingress-nginx's"
        );
    }
}

#[test]
fn each_row_says_what_the_code_does() {
    for (name, word) in readme_table() {
        // The value that asks for the most (`"true"` turns the switches on).
        let treated = treatment(&name, "true");
        let implemented = matches!(treated, Treatment::Implemented | Treatment::SourceRange)
            || CANARY_ANNOTATIONS.contains(&name.as_str())
            || AFFINITY_ANNOTATIONS.contains(&name.as_str());
        let matches = match word.as_str() {
            "yes" | "differs" | "no effect" => implemented,
            "fails closed" => treated == Treatment::FailClosed,
            "refused" => treated == Treatment::Snippet,
            "no" => treated == Treatment::Ignored,
            other => panic!("{name}: unknown word {other:?}"),
        };
        assert!(
            matches,
            "the README says {word:?} of {name}; the code: {treated:?}"
        );
    }
}
