//! `batpak graph ID`: the causal tree of a correlation id (or of the tree an
//! event belongs to) as Graphviz DOT, as SVG laid out here without any
//! external program, or as JSON nodes and edges.
//!
//! Nodes are the tree's events; an edge runs from each cause to its effect.
//! A cause outside the tree (an event correlated elsewhere) appears as a
//! dashed node so that no edge dangles.

use crate::filter::parse_id;
use crate::output::{entry_json, hex_id, short_id, stdout};
use crate::store_access::{get_event, open_for_inspection, Inspected};
use crate::Global;
use anyhow::Context;
use batpak::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

/// Arguments of `batpak graph`.
#[derive(clap::Args)]
pub struct Args {
    /// A correlation id, or the id of any event (its correlation tree is drawn
    /// and the event highlighted).
    #[arg(value_parser = parse_id)]
    id: u128,
    /// Render SVG instead of Graphviz DOT.
    #[arg(long)]
    svg: bool,
    /// Write to FILE instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// The tree of `args.id` (a correlation id, or any event of the tree).
fn load<S: EventStore>(args: &Args, store: &S, place: &str) -> anyhow::Result<Graph> {
    let mut focus = None;
    let mut correlation_id = args.id;
    let mut entries = store.by_correlation(args.id)?;
    if entries.is_empty() {
        let ev = get_event(store, place, args.id, "correlation id or event")?;
        correlation_id = ev.event.header.correlation_id;
        focus = (correlation_id != args.id).then_some(args.id);
        entries = store.by_correlation(correlation_id)?;
    }
    Ok(Graph::new(correlation_id, focus, entries))
}

/// One box of the drawing.
struct Node {
    id: u128,
    /// `None` for a cause outside the tree (only its id is known here).
    entry: Option<IndexEntry>,
    /// Row: causation distance from the top of the drawing.
    depth: usize,
}

struct Graph {
    correlation_id: u128,
    /// The event asked for, when it is not the tree's root.
    focus: Option<u128>,
    nodes: Vec<Node>,
    /// (cause, effect) as indexes into `nodes`.
    edges: Vec<(usize, usize)>,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<()> {
    let inspected = open_for_inspection(global)?;
    let place = inspected.place();
    let graph = match inspected {
        Inspected::File { store, .. } => load(args, &store, &place)?,
        Inspected::Postgres { store, .. } => load(args, &*store, &place)?,
    };

    let text = if args.svg {
        graph.svg()
    } else if global.json {
        graph.json().to_string() + "\n"
    } else {
        graph.dot()
    };
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut out = stdout();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

impl Graph {
    fn new(correlation_id: u128, focus: Option<u128>, entries: Vec<IndexEntry>) -> Self {
        let mut nodes: Vec<Node> = Vec::new();
        let mut at: HashMap<u128, usize> = HashMap::new();
        for e in entries {
            at.insert(e.event_id, nodes.len());
            nodes.push(Node {
                id: e.event_id,
                entry: Some(e),
                depth: 0,
            });
        }
        let in_tree = nodes.len();
        let mut edges = Vec::new();
        for effect in 0..in_tree {
            let Some(cause_id) = nodes[effect].entry.as_ref().and_then(|e| e.causation_id) else {
                continue;
            };
            let cause = *at.entry(cause_id).or_insert_with(|| {
                nodes.push(Node {
                    id: cause_id,
                    entry: None,
                    depth: 0,
                });
                nodes.len() - 1
            });
            edges.push((cause, effect));
        }
        let mut g = Self {
            correlation_id,
            focus,
            nodes,
            edges,
        };
        g.assign_depths();
        g
    }

    /// Depth = causation distance from a node with no cause in the drawing.
    /// Iterative (chains can be long) and safe against causation cycles,
    /// which a damaged or hand-made store could contain.
    fn assign_depths(&mut self) {
        let n = self.nodes.len();
        let mut cause_of: Vec<Option<usize>> = vec![None; n];
        for &(c, e) in &self.edges {
            cause_of[e] = Some(c);
        }
        let mut depth: Vec<Option<usize>> = vec![None; n];
        let mut on_path = vec![false; n];
        for start in 0..n {
            let mut path = Vec::new();
            let mut cur = start;
            let base = loop {
                if let Some(d) = depth[cur] {
                    break Some(d);
                }
                if on_path[cur] {
                    // A cycle: cut it here.
                    break None;
                }
                on_path[cur] = true;
                path.push(cur);
                match cause_of[cur] {
                    Some(c) => cur = c,
                    None => break None,
                }
            };
            let first = base.map_or(0, |b| b + 1);
            for (d, &node) in (first..).zip(path.iter().rev()) {
                depth[node] = Some(d);
                on_path[node] = false;
            }
        }
        for (node, d) in self.nodes.iter_mut().zip(depth) {
            node.depth = d.unwrap_or(0);
        }
    }

    fn label_lines(&self, node: &Node) -> Vec<String> {
        match &node.entry {
            Some(e) => vec![
                truncate(e.coord.entity(), 28),
                format!("{} · clock {}", e.kind, e.clock),
                short_id(node.id),
            ],
            None => vec![short_id(node.id), "(outside this tree)".to_string()],
        }
    }

    fn dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph batpak {{");
        let _ = writeln!(
            s,
            "  label=\"correlation {}\"; labelloc=t; rankdir=TB;",
            hex_id(self.correlation_id)
        );
        let _ = writeln!(
            s,
            "  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];"
        );
        for node in &self.nodes {
            let label = self
                .label_lines(node)
                .iter()
                .map(|l| dot_escape(l))
                .collect::<Vec<_>>()
                .join("\\n");
            let mut attrs = format!("label=\"{label}\"");
            if node.entry.is_none() {
                attrs.push_str(", style=\"rounded,dashed\"");
            }
            if self.focus == Some(node.id) {
                attrs.push_str(", penwidth=2, color=\"#c04000\"");
            }
            let _ = writeln!(s, "  \"{}\" [{attrs}];", hex_id(node.id));
        }
        for &(c, e) in &self.edges {
            let _ = writeln!(
                s,
                "  \"{}\" -> \"{}\";",
                hex_id(self.nodes[c].id),
                hex_id(self.nodes[e].id)
            );
        }
        s.push_str("}\n");
        s
    }

    fn json(&self) -> serde_json::Value {
        let nodes: Vec<_> = self
            .nodes
            .iter()
            .map(|n| match &n.entry {
                Some(e) => {
                    let mut v = entry_json(e);
                    v["depth"] = json!(n.depth);
                    v
                }
                None => json!({"event_id": hex_id(n.id), "depth": n.depth, "outside_tree": true}),
            })
            .collect();
        let edges: Vec<_> = self
            .edges
            .iter()
            .map(|&(c, e)| json!({"cause": hex_id(self.nodes[c].id), "effect": hex_id(self.nodes[e].id)}))
            .collect();
        json!({
            "correlation_id": hex_id(self.correlation_id),
            "focus": self.focus.map(hex_id),
            "nodes": nodes,
            "edges": edges,
        })
    }

    fn svg(&self) -> String {
        const BOX_W: usize = 210;
        const BOX_H: usize = 58;
        const GAP_X: usize = 30;
        const GAP_Y: usize = 50;
        const MARGIN: usize = 20;
        const TITLE_H: usize = 30;

        let rows_n = self.nodes.iter().map(|n| n.depth + 1).max().unwrap_or(0);
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); rows_n];
        for (i, n) in self.nodes.iter().enumerate() {
            rows[n.depth].push(i);
        }
        // Top row: causes from outside the tree first, then global order.
        // Lower rows: under their cause's place in the row above (fewer
        // crossing edges), then global order.
        let mut cause_of: Vec<Option<usize>> = vec![None; self.nodes.len()];
        for &(c, e) in &self.edges {
            cause_of[e] = Some(c);
        }
        let mut slot = vec![0usize; self.nodes.len()];
        for row in &mut rows {
            row.sort_by_key(|&i| {
                let seq = self.nodes[i]
                    .entry
                    .as_ref()
                    .map_or((0, 0), |e| (1, e.global_sequence));
                (cause_of[i].map_or(0, |c| slot[c]), seq)
            });
            for (k, &i) in row.iter().enumerate() {
                slot[i] = k;
            }
        }
        let widest = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
        // Wide enough for the title line too (about 7 px per character).
        let width = (2 * MARGIN + widest * BOX_W + (widest - 1) * GAP_X).max(2 * MARGIN + 7 * 45);
        let height = TITLE_H + 2 * MARGIN + rows_n * BOX_H + rows_n.saturating_sub(1) * GAP_Y;
        let mut pos = vec![(0usize, 0usize); self.nodes.len()];
        for (r, row) in rows.iter().enumerate() {
            let row_w = row.len() * BOX_W + row.len().saturating_sub(1) * GAP_X;
            let x0 = (width - row_w) / 2;
            for (k, &i) in row.iter().enumerate() {
                pos[i] = (
                    x0 + k * (BOX_W + GAP_X),
                    TITLE_H + MARGIN + r * (BOX_H + GAP_Y),
                );
            }
        }

        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\">"
        );
        s.push_str(
            "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" \
             markerWidth=\"8\" markerHeight=\"8\" orient=\"auto\">\
             <path d=\"M 0 0 L 10 5 L 0 10 z\" fill=\"#555555\"/></marker></defs>\n",
        );
        let _ = writeln!(
            s,
            "<rect x=\"0\" y=\"0\" width=\"{width}\" height=\"{height}\" fill=\"#ffffff\"/>"
        );
        let _ = writeln!(
            s,
            "<text x=\"{MARGIN}\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">correlation {}</text>",
            MARGIN + 4,
            hex_id(self.correlation_id)
        );
        for &(c, e) in &self.edges {
            let (cx, cy) = pos[c];
            let (ex, ey) = pos[e];
            let _ = writeln!(
                s,
                "<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#555555\" \
                 stroke-width=\"1.2\" marker-end=\"url(#arrow)\"/>",
                cx + BOX_W / 2,
                cy + BOX_H,
                ex + BOX_W / 2,
                ey
            );
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let (x, y) = pos[i];
            let (fill, stroke, extra) = match (&node.entry, self.focus == Some(node.id)) {
                (None, _) => ("#f4f4f4", "#888888", " stroke-dasharray=\"4 3\""),
                (Some(_), true) => ("#fff0e0", "#c04000", " stroke-width=\"2\""),
                (Some(_), false) => ("#eef4ff", "#3060a0", ""),
            };
            let _ = writeln!(s, "<g>");
            let _ = writeln!(s, "<title>{}</title>", hex_id(node.id));
            let _ = writeln!(
                s,
                "<rect x=\"{x}\" y=\"{y}\" width=\"{BOX_W}\" height=\"{BOX_H}\" rx=\"6\" \
                 fill=\"{fill}\" stroke=\"{stroke}\"{extra}/>"
            );
            for (k, line) in self.label_lines(node).iter().enumerate() {
                let weight = if k == 0 { " font-weight=\"bold\"" } else { "" };
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\"{weight}>{}</text>",
                    x + BOX_W / 2,
                    y + 18 + k * 16,
                    xml_escape(line)
                );
            }
            let _ = writeln!(s, "</g>");
        }
        s.push_str("</svg>\n");
        s
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('…');
        t
    }
}

fn dot_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(xml_escape("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(dot_escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 4), "abc");
    }
}
