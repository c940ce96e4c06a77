// A program written for vmw_backdoor 0.2.4, with every public name 0.2.4 had, in the way
// 0.2.4 users call them. It must keep compiling unchanged. (trybuild also runs `main`,
// which only names the function: outside VMware the calls would fail, as they should.)

type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

fn main() {
    let _: fn() -> Result<(), Error> = uses_every_0_2_4_name;
}

fn uses_every_0_2_4_name() -> Result<(), Error> {
    let _ = vmw_backdoor::is_vmware_cpu();
    let _ = vmw_backdoor::access_backdoor().map(|g| g.release_access().is_ok());
    let _ = vmw_backdoor::access_backdoor_privileged();
    let mut g = vmw_backdoor::probe_backdoor_privileged().or_else(|_| vmw_backdoor::probe_backdoor())?;
    g.probe_vmware_backdoor()?;
    {
        let mut c = vmw_backdoor::EnhancedChan::open(&mut g)?;
        let v: Option<Vec<u8>> = c.get_guestinfo(b"guestinfo.metadata")?;
        let _ = v;
        c.log("hello")?;
        c.report_agent()?;
        c.close().map_err(|_| "close")?;
    }
    let c: vmw_backdoor::EnhancedChan = g.open_enhanced_chan()?;
    drop(c);
    let e: vmw_backdoor::VmwError = "from text".into();
    let _: Error = Box::new(e);
    let _ = g.release_access();
    Ok(())
}
