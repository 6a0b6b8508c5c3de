//! Sessions: multi-turn conversations and agent trees in a workload, from a trace's
//! `session_id`, `turn`, `parent_id` and `think_ns` columns to the turns a replay sends.
//!
//! [`link`] ties rows into sessions and rejects what cannot be replayed (a parent that is not
//! in the trace, a cycle, a turn scheduled before its parent or numbered before it, a parent in
//! another session), naming the row; with `skip_bad` those rows and their descendants are left
//! out and counted instead. Each session is a tree rooted at its first turn. Rows with a
//! `session_id` and no `parent_id` (a multi-turn export that numbers turns) follow the previous
//! turn of their session, by `turn` then `scheduled_ns`.
//!
//! What a turn sends is decided by [`History`]: a turn's messages are its parent's messages,
//! the parent's reply (the one streamed in this run, or the recorded one) and the turn's own new
//! input; a turn whose whole prompt the trace describes by `hash_ids` sends that prompt as
//! recorded instead.

use std::collections::HashMap;

use trace_client::{Message, Role};

/// Where a turn's history comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum History {
    /// The recorded conversation: the trace's prompts (or `hash_ids` blocks) and its replies
    /// (stored `output_text`, else synthetic text of the recorded length).
    #[default]
    Recorded,
    /// The previous messages plus the reply the engine streamed in this run.
    Live,
}

impl History {
    /// The name the command line takes.
    pub fn as_str(self) -> &'static str {
        match self {
            History::Recorded => "recorded",
            History::Live => "live",
        }
    }
}

/// What a failed turn does to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnTurnError {
    /// The session ends: its remaining turns are rows with `error_kind = dropped`.
    #[default]
    End,
    /// The session goes on; the failed turn's reply is what streamed before the failure.
    Continue,
}

/// How a run treats sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionOptions {
    /// Replay sessions closed-loop (off: every row is an independent request at its recorded
    /// time, as before sessions existed).
    pub enabled: bool,
    /// Where history comes from.
    pub history: History,
    /// A failed turn ends its session, or not.
    pub on_turn_error: OnTurnError,
    /// At most this many sessions at once; later arrivals wait (their first turn's send lag
    /// shows it).
    pub max_sessions: Option<usize>,
    /// Multiplies every think time (after any retargeting).
    pub think_scale: f64,
    /// Leave out rows whose session links are bad (and their descendants), counted, instead of
    /// refusing the workload.
    pub skip_bad: bool,
    /// A ShareGPT workload sends each conversation's first turn alone (vLLM's reading), not
    /// the conversation as a session.
    pub sharegpt_first_turn: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            enabled: true,
            history: History::Recorded,
            on_turn_error: OnTurnError::End,
            max_sessions: None,
            think_scale: 1.0,
            skip_bad: false,
            sharegpt_first_turn: false,
        }
    }
}

/// The session columns of one row, as [`link`] reads them.
#[derive(Debug, Clone, Copy)]
pub struct RowLinks<'a> {
    /// The row's request id.
    pub request_id: &'a str,
    /// Its session, if given.
    pub session_id: Option<&'a str>,
    /// Its turn number, if given.
    pub turn: Option<i32>,
    /// The turn it follows, if given.
    pub parent_id: Option<&'a str>,
    /// When it was sent in the source.
    pub scheduled_ns: i64,
}

/// One turn of a linked session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnLink {
    /// The row (index into the rows given to [`link`]).
    pub row: usize,
    /// The parent turn (index into the session's turns); None for the root.
    pub parent: Option<usize>,
    /// Turns sent once this one ends (index into the session's turns), by recorded time.
    pub children: Vec<usize>,
}

/// One linked session: a tree of turns, the root first, every parent before its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id: the rows' `session_id`, else the root's request id.
    pub id: String,
    /// The turns.
    pub turns: Vec<TurnLink>,
}

/// Sessions linked from a trace's rows.
#[derive(Debug, Clone, Default)]
pub struct Linked {
    /// Sessions by the root's recorded time.
    pub sessions: Vec<Session>,
    /// Rows left out under `skip_bad`, each with its problem.
    pub skipped: Vec<String>,
}

/// Links rows into sessions. A bad row is an error naming it (`row N (request_id 'x'): ...`),
/// or, with `skip_bad`, left out with its descendants and listed in [`Linked::skipped`].
pub fn link(rows: &[RowLinks<'_>], skip_bad: bool) -> Result<Linked, String> {
    let n = rows.len();
    let name = |i: usize| format!("row {i} (request_id '{}')", rows[i].request_id);
    let mut by_id: HashMap<&str, usize> = HashMap::with_capacity(n);
    let mut dup: HashMap<&str, usize> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if by_id.insert(r.request_id, i).is_some() {
            dup.entry(r.request_id).or_insert(i);
        }
    }
    // Later duplicates must not shadow the first.
    for (i, r) in rows.iter().enumerate().rev() {
        by_id.insert(r.request_id, i);
    }
    let mut problem: Vec<Option<String>> = vec![None; n];
    let mut parent: Vec<Option<usize>> = vec![None; n];
    for (i, r) in rows.iter().enumerate() {
        let Some(p) = r.parent_id else { continue };
        if dup.contains_key(p) {
            problem[i] = Some(format!(
                "{}: parent_id '{p}' names more than one row; a parent must be unique",
                name(i)
            ));
        } else if let Some(&j) = by_id.get(p) {
            parent[i] = Some(j);
        } else {
            problem[i] = Some(format!(
                "{}: parent_id '{p}' is not a request in the trace",
                name(i)
            ));
        }
    }
    // A session that numbers its turns without naming parents: each follows the previous.
    let mut numbered: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if let (Some(s), None) = (r.session_id, r.parent_id) {
            numbered.entry(s).or_default().push(i);
        }
    }
    for members in numbered.values_mut() {
        members.sort_by_key(|&i| (rows[i].turn.unwrap_or(0), rows[i].scheduled_ns, i));
        for w in members.windows(2) {
            parent[w[1]] = Some(w[0]);
        }
    }
    for i in 0..n {
        let (Some(j), None) = (parent[i], &problem[i]) else {
            continue;
        };
        let (c, p) = (&rows[i], &rows[j]);
        if c.scheduled_ns < p.scheduled_ns {
            problem[i] = Some(format!(
                "{}: scheduled at {} ns, before its parent {} at {} ns",
                name(i),
                c.scheduled_ns,
                name(j),
                p.scheduled_ns
            ));
        } else if let (Some(ct), Some(pt)) = (c.turn, p.turn)
            && ct <= pt
        {
            problem[i] = Some(format!(
                "{}: turn {ct} does not come after its parent's turn {pt} ({})",
                name(i),
                name(j)
            ));
        } else if let (Some(cs), Some(ps)) = (c.session_id, p.session_id)
            && cs != ps
        {
            problem[i] = Some(format!(
                "{}: in session '{cs}' but its parent {} is in session '{ps}'",
                name(i),
                name(j)
            ));
        }
    }
    // Cycles: walk up from each row; a walk that meets itself is a cycle.
    let mut state = vec![0u8; n]; // 0 new, 1 on the current walk, 2 done
    for start in 0..n {
        let mut path: Vec<usize> = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at {
            match state[i] {
                2 => break,
                1 => {
                    let from = path.iter().position(|&k| k == i).unwrap_or(0);
                    for &k in &path[from..] {
                        if problem[k].is_none() {
                            problem[k] =
                                Some(format!("{}: its parent_id links form a cycle", name(k)));
                        }
                        // Broken here so that the walk below ends.
                        parent[k] = None;
                    }
                    break;
                }
                _ => {
                    state[i] = 1;
                    path.push(i);
                    at = parent[i];
                }
            }
        }
        for k in path {
            state[k] = 2;
        }
    }
    if !skip_bad && let Some(p) = problem.iter().flatten().next() {
        return Err(p.clone());
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, p) in parent.iter().enumerate() {
        if let Some(j) = *p {
            children[j].push(i);
        }
    }
    for c in &mut children {
        c.sort_by_key(|&i| (rows[i].scheduled_ns, i));
    }
    let mut skipped = Vec::new();
    let mut sessions = Vec::new();
    let mut roots: Vec<usize> = (0..n).filter(|&i| parent[i].is_none()).collect();
    roots.sort_by_key(|&i| (rows[i].scheduled_ns, i));
    for root in roots {
        // Breadth first: every parent before its children.
        let mut turns: Vec<TurnLink> = Vec::new();
        let mut queue = std::collections::VecDeque::from([(root, None::<usize>)]);
        while let Some((row, up)) = queue.pop_front() {
            if let Some(p) = &problem[row] {
                skipped.push(p.clone());
                let mut stack = children[row].clone();
                while let Some(d) = stack.pop() {
                    skipped.push(format!("{}: a descendant of a bad row", name(d)));
                    stack.extend(children[d].iter().copied());
                }
                continue;
            }
            let me = turns.len();
            turns.push(TurnLink {
                row,
                parent: up,
                children: Vec::new(),
            });
            if let Some(u) = up {
                turns[u].children.push(me);
            }
            queue.extend(children[row].iter().map(|&c| (c, Some(me))));
        }
        if let Some(first) = turns.first() {
            let r = &rows[first.row];
            sessions.push(Session {
                id: r.session_id.unwrap_or(r.request_id).to_string(),
                turns,
            });
        }
    }
    Ok(Linked { sessions, skipped })
}

/// The messages a turn sends: its history (the parent's messages and reply) and its own input.
pub fn messages(history: &[Message], input: &str) -> Vec<Message> {
    let mut m = Vec::with_capacity(history.len() + 1);
    m.extend_from_slice(history);
    m.push(Message {
        role: Role::User,
        content: input.to_string(),
    });
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(
        id: &'a str,
        session: Option<&'a str>,
        turn: Option<i32>,
        parent: Option<&'a str>,
        t: i64,
    ) -> RowLinks<'a> {
        RowLinks {
            request_id: id,
            session_id: session,
            turn,
            parent_id: parent,
            scheduled_ns: t,
        }
    }

    fn ids(rows: &[RowLinks<'_>], s: &Session) -> Vec<String> {
        s.turns
            .iter()
            .map(|t| rows[t.row].request_id.to_string())
            .collect()
    }

    #[test]
    fn parent_links_make_trees_with_fan_out() {
        let rows = [
            row("b1", None, None, Some("a"), 20),
            row("a", None, None, None, 10),
            row("b2", None, None, Some("a"), 15),
            row("c", None, None, Some("b1"), 30),
            row("solo", None, None, None, 5),
        ];
        let l = link(&rows, false).unwrap();
        assert_eq!(l.sessions.len(), 2);
        assert_eq!(l.sessions[0].id, "solo");
        let s = &l.sessions[1];
        assert_eq!(s.id, "a");
        assert_eq!(ids(&rows, s), ["a", "b2", "b1", "c"]);
        assert_eq!(s.turns[0].children, [1, 2]);
        assert_eq!(s.turns[2].children, [3]);
        assert_eq!(s.turns[3].parent, Some(2));
    }

    #[test]
    fn numbered_turns_without_parents_follow_each_other() {
        let rows = [
            row("x2", Some("s"), Some(2), None, 30),
            row("x0", Some("s"), Some(0), None, 10),
            row("x1", Some("s"), Some(1), None, 20),
            row("y0", Some("t"), Some(0), None, 15),
        ];
        let l = link(&rows, false).unwrap();
        assert_eq!(l.sessions.len(), 2);
        assert_eq!(l.sessions[0].id, "s");
        assert_eq!(ids(&rows, &l.sessions[0]), ["x0", "x1", "x2"]);
        assert_eq!(l.sessions[1].id, "t");
    }

    #[test]
    fn bad_links_name_the_row_or_are_skipped_with_their_descendants() {
        let missing = [row("a", None, None, Some("nope"), 0)];
        let e = link(&missing, false).unwrap_err();
        assert!(
            e.contains("row 0 (request_id 'a')") && e.contains("'nope'"),
            "{e}"
        );

        let cycle = [
            row("a", None, None, Some("b"), 0),
            row("b", None, None, Some("a"), 0),
            row("ok", None, None, None, 0),
        ];
        let e = link(&cycle, false).unwrap_err();
        assert!(e.contains("cycle"), "{e}");
        let l = link(&cycle, true).unwrap();
        assert_eq!(l.sessions.len(), 1);
        assert_eq!(l.skipped.len(), 2, "{:?}", l.skipped);

        let early = [
            row("a", None, None, None, 100),
            row("b", None, None, Some("a"), 50),
            row("c", None, None, Some("b"), 200),
        ];
        let e = link(&early, false).unwrap_err();
        assert!(e.contains("row 1 (request_id 'b')") && e.contains("before its parent"));
        let l = link(&early, true).unwrap();
        assert_eq!(l.sessions.len(), 1);
        assert_eq!(l.sessions[0].turns.len(), 1);
        assert_eq!(l.skipped.len(), 2, "b and its child c: {:?}", l.skipped);

        let renumbered = [
            row("a", Some("s"), Some(3), None, 0),
            row("b", Some("s"), Some(1), Some("a"), 10),
        ];
        assert!(link(&renumbered, false).unwrap_err().contains("turn 1"));
        let crossed = [
            row("a", Some("s"), None, None, 0),
            row("b", Some("t"), None, Some("a"), 10),
        ];
        assert!(link(&crossed, false).unwrap_err().contains("session 't'"));
        let twice = [
            row("a", None, None, None, 0),
            row("a", None, None, None, 1),
            row("b", None, None, Some("a"), 2),
        ];
        assert!(
            link(&twice, false)
                .unwrap_err()
                .contains("more than one row")
        );
    }
}
