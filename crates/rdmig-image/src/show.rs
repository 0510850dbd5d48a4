//! `rdmig image show DIR`: prints the verbs objects that rdmig's CRIU plugin saved in a CRIU
//! image directory (its `rdmig-rxe-<id>.img` files), like CRIU's `crit show` does for CRIU's own
//! images.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::{ucma, FileKind, ImageError, Loaded};

type Result<T> = std::result::Result<T, ImageError>;

/// Reads every plugin image in `dir`, verbs and rdma_cm; an error if there is none (a directory
/// without our images is either not a CRIU image dir or a process without verbs state: both
/// worth saying).
pub fn load(dir: &Path) -> Result<(Vec<Loaded>, Vec<ucma::Loaded>)> {
    let all = crate::read_dir(dir)?;
    let cm = ucma::read_dir(dir)?;
    if all.is_empty() && cm.is_empty() {
        return Err(ImageError::NoImages { path: dir.to_path_buf() });
    }
    Ok((all, cm))
}

fn hex_preview(b: &[u8]) -> String {
    b.iter().take(16).map(|x| format!("{x:02x}")).collect::<Vec<_>>().join("")
}

/// Human-readable listing of the saved verbs objects.
pub fn show(dir: &Path) -> Result<String> {
    let mut out = String::new();
    let (all, cm) = load(dir)?;
    for l in all {
        let name = l.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let i = &l.image;
        match &i.kind {
            FileKind::Context(c) => {
                let token = c.file_token.as_ref().map(|t| format!(", uverbs file {t}")).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{name} (format {}): file id {}, verbs context on {} ({}, chr {}:{}), pid {} fd {}{token}",
                    l.version, i.id, c.ibdev, c.path, c.rdev_major, c.rdev_minor, i.pid, i.fd
                );
                for h in &c.pds {
                    let _ = writeln!(out, "  pd   handle {}", h.handle);
                }
                for h in &c.cqs {
                    let _ = writeln!(out, "  cq   handle {}", h.handle);
                }
                for q in &c.srqs {
                    let pd = q.pd.map(|p| format!(" pd {p}")).unwrap_or_default();
                    let ring = q.pgoff.map(|o| format!(" ring pgoff {o:#x}")).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  srq  handle {}{pd} max_wr {} max_sge {} limit {}{ring} user_handle {:#x} async events read {}",
                        q.handle, q.max_wr, q.max_sge, q.srq_limit, q.user_handle, q.events_reported
                    );
                }
                for q in &c.qps {
                    let a = &q.attr;
                    let links = q
                        .links
                        .map(|k| format!(" pd {} cq {}/{}{}", k.pd, k.send_cq, k.recv_cq, k.srq.map(|s| format!(" srq {s}")).unwrap_or_default()))
                        .unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  qp   handle {}{links} qpn {} ({}) {} {} sq_psn {:#x} rq_psn {:#x} dest_qpn {} caps send {}x{} recv {}x{} inline {}",
                        q.handle,
                        q.qpn,
                        q.qpn_source,
                        q.qp_type,
                        crate::qp_state_name(a.state),
                        a.sq_psn,
                        a.rq_psn,
                        a.dest_qp_num,
                        a.max_send_wr,
                        a.max_send_sge,
                        a.max_recv_wr,
                        a.max_recv_sge,
                        a.max_inline_data
                    );
                }
                for m in &c.mrs {
                    let access = m.access.map(|a| format!("{a:#x}")).unwrap_or_else(|| "?".into());
                    let pd = m.pd.map(|p| format!(" pd {p}")).unwrap_or_default();
                    let _ = writeln!(
                        out,
                        "  mr   handle {}{pd} lkey {:#010x} rkey {:#010x} iova {:#x} length {} access {access}",
                        m.handle, m.lkey, m.rkey, m.iova, m.length
                    );
                }
                for m in &c.mws {
                    let rkey = m.rkey.map(|k| format!("{k:#010x}")).unwrap_or_else(|| "?".into());
                    let pd = m.pd.map(|p| format!(" pd {p}")).unwrap_or_default();
                    let bound = match &m.binding {
                        Some(b) => format!(
                            " bound to MR index {} addr {:#x} length {} access {:#x}{}",
                            b.mr_index,
                            b.addr,
                            b.length,
                            b.access,
                            b.qpn.map(|q| format!(" QP {q}")).unwrap_or_default()
                        ),
                        None => " unbound".into(),
                    };
                    let _ = writeln!(out, "  mw   handle {}{pd} type {} rkey {rkey}{bound}", m.handle, m.mw_type);
                }
                for a in &c.ahs {
                    let n = a.ah_num.map(|k| k.to_string()).unwrap_or_else(|| "?".into());
                    let pd = a.pd.map(|p| format!(" pd {p}")).unwrap_or_default();
                    let av =
                        a.av.as_ref()
                            .map(|v| {
                                let dgid = v.dgid.chunks(2).map(|w| format!("{:02x}{:02x}", w[0], w[1])).collect::<Vec<_>>().join(":");
                                format!(
                                    " port {} sgid {} ({}) dgid {dgid} hop_limit {} tclass {} flow_label {:#x}",
                                    v.port, v.sgid, v.sgid_type, v.hop_limit, v.traffic_class, v.flow_label
                                )
                            })
                            .unwrap_or_default();
                    let _ = writeln!(out, "  ah   handle {}{pd} ah_num {n}{av} user_handle {:#x}", a.handle, a.user_handle);
                }
                let _ = writeln!(out, "  completion channels {}, async event files {}", c.comp_channels, c.async_event_files);
                for ch in &c.channels {
                    let _ = writeln!(out, "  channel {} fd {}: {} queued event(s) of CQ handles {:?}", ch.token, ch.fd, ch.pending.len(), ch.pending);
                }
                for cq in c.cqs.iter().filter(|cq| c.events_saved && (cq.channel.is_some() || cq.user_handle != 0)) {
                    let _ = writeln!(
                        out,
                        "  cq   handle {} user_handle {:#x} channel {} completion events read {} async events read {}",
                        cq.handle,
                        cq.user_handle,
                        cq.channel.as_deref().unwrap_or("-"),
                        cq.comp_events_reported,
                        cq.events_reported
                    );
                }
                if !c.async_pending.is_empty() {
                    let _ = writeln!(out, "  async event file: {} queued event(s)", c.async_pending.len());
                }
                for q in &c.queues {
                    if !q.in_blob() {
                        let _ = writeln!(
                            out,
                            "  vma  {:#x}-{:#x} {} pgoff {:#x}: {} bytes, carried by its QP's state image",
                            q.start, q.end, q.prot, q.pgoff, q.len
                        );
                        continue;
                    }
                    let data = &l.blob[q.blob_offset as usize..(q.blob_offset + q.len) as usize];
                    let _ =
                        writeln!(out, "  vma  {:#x}-{:#x} {} pgoff {:#x}: {} bytes saved ({}...)", q.start, q.end, q.prot, q.pgoff, q.len, hex_preview(data));
                }
            }
            FileKind::EventFile(e) => {
                let ctx = e.context_id.map(|c| format!("context file id {c}")).unwrap_or_else(|| "context unknown".into());
                let _ = writeln!(
                    out,
                    "{name} (format {}): file id {}, infiniband event file, pid {} fd {}: {} ({}), {ctx}{}",
                    l.version,
                    i.id,
                    i.pid,
                    i.fd,
                    e.role,
                    e.role_source,
                    e.channel.as_ref().map(|t| format!(", channel {t}")).unwrap_or_default()
                );
            }
        }
    }
    for l in &cm {
        out.push_str(&ucma::describe(l));
    }
    Ok(out)
}

/// The same as JSON: `{"dir", "images": [{"file", "format", ...the saved image...}], "rdma_cm":
/// [{"file", "format", ...the saved rdma_cm file...}]}` (queue contents are summarised by length,
/// not included).
pub fn show_json(dir: &Path) -> Result<Value> {
    let mut images = vec![];
    let (all, cm) = load(dir)?;
    for l in all {
        let mut v = serde_json::to_value(&l.image).expect("image types always serialize");
        if let Some(o) = v.as_object_mut() {
            o.insert("file".into(), json!(l.path.file_name().map(|n| n.to_string_lossy().into_owned())));
            o.insert("format".into(), json!(l.version));
            o.insert("blob_bytes".into(), json!(l.blob.len()));
        }
        images.push(v);
    }
    let cm: Vec<Value> = cm
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(&l.file).expect("image types always serialize");
            if let Some(o) = v.as_object_mut() {
                o.insert("file".into(), json!(l.path.file_name().map(|n| n.to_string_lossy().into_owned())));
                o.insert("format".into(), json!(l.version));
            }
            v
        })
        .collect();
    Ok(json!({ "dir": dir.display().to_string(), "images": images, "rdma_cm": cm }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ah, AhAv, Context, Cq, EventFile, FileImage, Handle, Mr, Mw, MwBinding, Qp, QpAttr, QpLinks, QueueVma, Srq};

    #[test]
    fn shows_what_the_plugin_wrote() {
        let d = tempfile::tempdir().unwrap();
        assert!(show(d.path()).unwrap_err().to_string().contains("no rdmig verbs or rdma_cm images (rdmig-rxe-<id>.img, rdmig-ucma-<id>.img)"));
        let ctx = FileImage {
            id: 9,
            pid: 100,
            fd: 3,
            ns_pid: None,
            kind: FileKind::Context(Box::new(Context {
                path: "/dev/infiniband/uverbs0".into(),
                rdev_major: 231,
                rdev_minor: 192,
                ibdev: "rxe0".into(),
                flags: 2,
                pds: vec![Handle { handle: 0 }, Handle { handle: 4 }],
                cqs: vec![Cq { handle: 2, pgoff: None, cqe: None, ..Default::default() }],
                srqs: vec![Srq { handle: 5, pd: Some(4), pgoff: Some(0x30), max_wr: 511, max_sge: 1, srq_limit: 16, ..Default::default() }],
                qps: vec![Qp {
                    handle: 3,
                    qpn: 17,
                    qpn_source: "only QP of the process".into(),
                    qp_type: "rc".into(),
                    attr: QpAttr { state: 1, ..Default::default() },
                    links: Some(QpLinks { pd: 4, send_cq: 2, recv_cq: 2, sq_pgoff: 0, rq_pgoff: 0x30, srq: Some(5) }),
                    ..Default::default()
                }],
                mrs: vec![Mr { handle: 1, lkey: 0x105, rkey: 0x105, iova: 0x7f00_0000, length: 65536, access: Some(0xf), pd: Some(4) }],
                mws: vec![Mw {
                    handle: 7,
                    rkey: Some(0x8000_0205),
                    mw_type: 1,
                    pd: Some(0),
                    binding: Some(MwBinding { mr_index: 1, addr: 0x7f00_0000, length: 4096, access: 2, qpn: None }),
                }],
                ahs: vec![Ah {
                    handle: 6,
                    ah_num: Some(3),
                    pd: Some(0),
                    user_handle: 0x55d0,
                    av: Some(AhAv {
                        port: 1,
                        sgid: "gid1".into(),
                        sgid_type: "RoCE v2".into(),
                        dgid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                        flow_label: 0,
                        hop_limit: 64,
                        traffic_class: 0,
                    }),
                }],
                comp_channels: 0,
                events_saved: false,
                channels: vec![],
                async_pending: vec![],
                async_event_files: 1,
                queues: vec![QueueVma { start: 0x1000, end: 0x1004, pgoff: 1, prot: "rw-s".into(), blob_offset: 0, len: 4, contents: Default::default() }],
                file_token: Some("00000000feedf00d".into()),
            })),
        };
        crate::write_file(&d.path().join(crate::file_name(9)), &ctx, &[0xde, 0xad, 0xbe, 0xef]).unwrap();
        let ev = FileImage {
            id: 10,
            pid: 100,
            fd: 4,
            ns_pid: None,
            kind: FileKind::EventFile(EventFile {
                context_id: Some(9),
                role: "async".into(),
                role_source: "x".into(),
                flags: 2,
                channel: None,
                file_token: None,
            }),
        };
        crate::write_file(&d.path().join(crate::file_name(10)), &ev, &[]).unwrap();
        let s = show(d.path()).unwrap();
        assert!(s.contains("qp   handle 3 pd 4 cq 2/2 srq 5 qpn 17"), "{s}");
        assert!(s.contains("srq  handle 5 pd 4 max_wr 511 max_sge 1 limit 16 ring pgoff 0x30"), "{s}");
        assert!(s.contains("mr   handle 1 pd 4 lkey"), "{s}");
        assert!(s.contains("pd   handle 4"), "{s}");
        assert!(s.contains("pid 100 fd 3, uverbs file 00000000feedf00d"), "{s}");
        assert!(s.contains("mw   handle 7 pd 0 type 1 rkey 0x80000205 bound to MR index 1 addr 0x7f000000 length 4096 access 0x2"), "{s}");
        assert!(s.contains("ah   handle 6 pd 0 ah_num 3 port 1 sgid gid1 (RoCE v2) dgid fe80:0000:0000:0000:0000:0000:0000:0001 hop_limit 64"), "{s}");
        assert!(s.contains("INIT"), "{s}");
        assert!(s.contains("lkey 0x00000105"), "{s}");
        assert!(s.contains("deadbeef"), "{s}");
        assert!(s.contains("infiniband event file, pid 100 fd 4: async"), "{s}");
        let j = show_json(d.path()).unwrap();
        assert_eq!(j["images"][0]["kind"]["qps"][0]["qpn"], 17);
        assert_eq!(j["images"][1]["kind"]["role"], "async");
        // rdma_cm images follow the verbs ones.
        let cm = ucma::CmFile {
            id: 11,
            pid: 100,
            fd: 5,
            ns_pid: None,
            flags: 2,
            ids: vec![ucma::CmId {
                id: 3,
                uid: 0x10,
                ps: ucma::PortSpace::Tcp,
                qp_type: ucma::QpType::Rc,
                events_reported: 0,
                options: ucma::CmOptions::default(),
                state: ucma::CmState::Listen { src: "10.0.0.1:18515".parse().unwrap(), backlog: 16 },
                dev: None,
            }],
            devices: Vec::new(),
            events: Vec::new(),
        };
        std::fs::write(d.path().join(ucma::file_name(11)), ucma::encode(&cm)).unwrap();
        let s = show(d.path()).unwrap();
        assert!(
            s.contains("rdmig-ucma-11.img (format 2): file id 11, rdma_cm file, pid 100 fd 5, 1 CM ID(s)\n  cm_id 3 listen 10.0.0.1:18515 backlog 16"),
            "{s}"
        );
        let j = show_json(d.path()).unwrap();
        assert_eq!(j["rdma_cm"][0]["ids"][0]["state"]["kind"], "listen");
        assert_eq!(j["rdma_cm"][0]["file"], "rdmig-ucma-11.img");
        // A directory with rdma_cm images only is shown too.
        let only = tempfile::tempdir().unwrap();
        std::fs::write(only.path().join(ucma::file_name(11)), ucma::encode(&cm)).unwrap();
        assert!(show(only.path()).unwrap().starts_with("rdmig-ucma-11.img"));
        // A damaged image is an error naming the file, not a partial listing.
        std::fs::write(d.path().join(crate::file_name(11)), b"RDMIGRXE\x09\0\0\0").unwrap();
        let e = format!("{:#}", show(d.path()).unwrap_err());
        assert!(e.contains("rdmig-rxe-11.img") && e.contains("truncated"), "{e}");
    }
}
