//! Notebook display: the small HTML tables servers, clients and connections show in Jupyter
//! (`_repr_html_`), built from the same facts as their plain repr.

use pyo3::prelude::*;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The name a repr or a table's title gives `obj`: its class's qualified name, so that a subclass is
/// shown as itself, as CPython's socket repr and asyncio's reprs show theirs.
pub fn class_name(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    Ok(obj.get_type().qualname()?.to_string())
}

/// `obj`'s repr: its class's name, then `details`.
pub fn repr(obj: &Bound<'_, PyAny>, details: &str) -> PyResult<String> {
    Ok(format!("<{} {details}>", class_name(obj)?))
}

/// The repr of a `T` where no class object is at hand (a finalizer's warning): the base class's name,
/// then `details`.
pub fn base_repr<T: pyo3::PyClass>(details: &str) -> String {
    format!("<{} {details}>", T::NAME)
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
