use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out: Option<PathBuf> = std::env::args().nth(2).map(PathBuf::from);
    for (name, yaml) in altostrat_vpn_operator::crd::render_all()? {
        match &out {
            Some(dir) => std::fs::write(dir.join(name), yaml)?,
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}
