//! Interleaving a thread's native frames with its Python frames.
//!
//! Each native frame of the evaluation loop runs Python frames: up to 3.10
//! exactly one; from 3.11 one or more (calls between Python functions stay
//! in the same C call), delimited by the *entry* frame, the first Python
//! frame a C-level call of the interpreter ran (3.11 flags it `is_entry`;
//! 3.12+ puts a shim frame after it). Walking both stacks from the
//! innermost frame, each evaluation-loop frame is replaced by the next
//! group of Python frames (a group may be empty: a call whose only frame
//! has not started, which the walks leave out); other native frames stay
//! where they are. Python frames left over when the native frames run out
//! (a native stack cut short) go outermost, where they were; an
//! evaluation-loop frame with no group left stays as a native frame.

/// One frame of an interleaved stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The native frame at this index of the native stack.
    Native(usize),
    /// The Python frame at this index of the Python stack.
    Python(usize),
}

/// Interleaves a native stack (`eval[i]`: whether native frame `i` is the
/// evaluation loop) with a Python stack cut into groups (`groups[g]`: how
/// many Python frames the `g`-th evaluation-loop call runs, possibly none:
/// a call whose only frame is not started yet), both innermost first. The
/// Python frames are numbered innermost first across the groups. Writes the
/// result to `out`, **outermost first**.
pub fn interleave(eval: &[bool], groups: &[usize], out: &mut Vec<Piece>) {
    out.clear();
    let (mut p, mut g) = (0, 0);
    for (n, &is_eval) in eval.iter().enumerate() {
        if is_eval && g < groups.len() {
            for _ in 0..groups[g] {
                out.push(Piece::Python(p));
                p += 1;
            }
            g += 1;
        } else {
            out.push(Piece::Native(n));
        }
    }
    let total: usize = groups.iter().sum();
    out.extend((p..total).map(Piece::Python));
    out.reverse();
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::*;

    #[test]
    fn one_python_frame_per_eval_frame_up_to_3_10() {
        // leaf: a C function called from Python, called from Python
        // natives: [time_sleep, cfunc_call, eval, vectorcall, eval, main]
        let eval = [false, false, true, false, true, false];
        let mut out = Vec::new();
        interleave(&eval, &[1, 1], &mut out);
        assert_eq!(
            out,
            vec![
                Native(5),
                Python(1),
                Native(3),
                Python(0),
                Native(1),
                Native(0)
            ]
        );
    }

    #[test]
    fn one_eval_frame_runs_a_group_from_3_11() {
        // Python: [leaf, mid, entry | other-entry]; natives: [sort, eval, call, eval, main]
        let eval = [false, true, false, true, false];
        let mut out = Vec::new();
        interleave(&eval, &[3, 1], &mut out);
        assert_eq!(
            out,
            vec![
                Native(4),
                Python(3),
                Native(2),
                Python(2),
                Python(1),
                Python(0),
                Native(0)
            ]
        );
    }

    #[test]
    fn leftovers_go_outermost_and_spare_eval_frames_stay() {
        let mut out = Vec::new();
        // The native stack was cut short: one eval frame for two groups.
        interleave(&[false, true], &[1, 1], &mut out);
        assert_eq!(out, vec![Python(1), Python(0), Native(0)]);
        // More eval frames than groups.
        interleave(&[true, true, false], &[1], &mut out);
        assert_eq!(out, vec![Native(2), Native(1), Python(0)]);
        // No Python frames at all: the native stack as it is.
        interleave(&[false, true], &[], &mut out);
        assert_eq!(out, vec![Native(1), Native(0)]);
    }

    #[test]
    fn an_empty_group_takes_its_eval_frame_and_keeps_the_others_in_place() {
        // The innermost call's frame has not started (left out by the
        // walk): its eval frame goes, the next group stays with its own.
        let mut out = Vec::new();
        interleave(&[true, false, true, false], &[0, 2], &mut out);
        assert_eq!(out, vec![Native(3), Python(1), Python(0), Native(1)]);
    }
}
