//! Notebook display: the small HTML tables servers, clients and connections show in Jupyter
//! (`_repr_html_`), built from the same facts as their plain repr.

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A titled two-column table of `rows`.
pub fn table(title: &str, rows: &[(&str, String)]) -> String {
    let body: String = rows
        .iter()
        .map(|(name, value)| {
            format!(
                "<tr><th style=\"text-align:left\">{}</th><td>{}</td></tr>",
                escape(name),
                escape(value)
            )
        })
        .collect();
    format!(
        "<table><caption style=\"text-align:left\"><b>{}</b></caption>{body}</table>",
        escape(title)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn values_are_escaped() {
        let html = super::table("T<1>", &[("peer", "<script>".to_string())]);
        assert!(html.contains("T&lt;1&gt;") && html.contains("&lt;script&gt;") && !html.contains("<script>"));
    }
}
