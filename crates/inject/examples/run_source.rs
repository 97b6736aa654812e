//! `run_source PID SOURCE`: runs Python source in a running CPython
//! process at its next safe point, and says how.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: run_source PID SOURCE");
        std::process::exit(2);
    }
    let pid: u32 = args[1].parse().expect("a pid");
    let mut target = match echion_inject::Target::open(pid) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("run_source: {e}");
            std::process::exit(1);
        }
    };
    match target.inject(&args[2], std::time::Duration::from_secs(3)) {
        Ok(inj) => {
            println!("{inj:?}");
            for _ in 0..300 {
                if let Some(result) = target.done(&inj) {
                    println!("done: {result}");
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            println!("not done after 3 s");
        }
        Err(e) => {
            eprintln!("run_source: {e}");
            std::process::exit(1);
        }
    }
}
