//! Interleaving a thread's native frames with its Python frames.
//!
//! Each native frame of the evaluation loop runs Python frames: up to 3.10
//! exactly one; from 3.11 one or more (calls between Python functions stay
//! in the same C call), delimited by the *entry* frame, the first Python
//! frame a C-level call of the interpreter ran (3.11 flags it `is_entry`;
//! 3.12+ puts a shim frame after it). Walking both stacks from the
//! innermost frame, each evaluation-loop frame is replaced by the next
//! group of Python frames; other native frames stay where they are. Python
//! frames left over when the native frames run out (a native stack cut
//! short) go outermost, where they were; an evaluation-loop frame with no
//! Python frame left stays as a native frame.

/// One frame of an interleaved stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    /// The native frame at this index of the native stack.
    Native(usize),
    /// The Python frame at this index of the Python stack.
    Python(usize),
}

/// Interleaves a native stack (`eval[i]`: whether native frame `i` is the
/// evaluation loop) with a Python stack (`ends[j]`: whether Python frame
/// `j` is the outermost of its group, see the module doc), both innermost
/// first. Writes the result to `out`, **outermost first**.
pub fn interleave(eval: &[bool], ends: &[bool], out: &mut Vec<Piece>) {
    out.clear();
    let mut p = 0;
    for (n, &is_eval) in eval.iter().enumerate() {
        if is_eval && p < ends.len() {
            while p < ends.len() {
                out.push(Piece::Python(p));
                p += 1;
                if ends[p - 1] {
                    break;
                }
            }
        } else {
            out.push(Piece::Native(n));
        }
    }
    out.extend((p..ends.len()).map(Piece::Python));
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
        let ends = [true, true];
        let mut out = Vec::new();
        interleave(&eval, &ends, &mut out);
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
        let ends = [false, false, true, true];
        let mut out = Vec::new();
        interleave(&eval, &ends, &mut out);
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
        interleave(&[false, true], &[true, true], &mut out);
        assert_eq!(out, vec![Python(1), Python(0), Native(0)]);
        // More eval frames than Python frames.
        interleave(&[true, true, false], &[true], &mut out);
        assert_eq!(out, vec![Native(2), Native(1), Python(0)]);
        // No Python frames at all: the native stack as it is.
        interleave(&[false, true], &[], &mut out);
        assert_eq!(out, vec![Native(1), Native(0)]);
    }
}
