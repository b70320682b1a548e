; vmrun's KVM probe guest: a boot sector that SeaBIOS loads at 0x7c00, and two more sectors.
;
; It goes from real mode to protected mode to long mode (with page tables it builds itself:
; the first 2 MiB mapped by 4 KiB pages, the next 2 MiB by one 2 MiB page, and the same 4 MiB
; again at the top 2 GiB, where a Linux kernel runs), jumps to the top 2 GiB, does 64-bit work
; on 3 MiB of memory through both kinds of mapping, and only when its result is right writes
; the marker line "vmrun-kvm-ok" to COM1 and ends QEMU through isa-debug-exit (port 0xf4).
; On the way it names each mode it reaches on COM1, so the host can say how far it got:
;
;   vmrun-probe: real protected long
;   vmrun-kvm-ok
;
; The work (2^22 rounds of a xorshift64 step and a memory add, some 60 million instructions)
; takes a fraction of a second where the CPU runs the guest (working KVM), about 0.7 s under
; TCG, and over a minute where KVM only emulates the guest instruction by instruction (broken
; nested virtualisation, e.g. PVM with a guest that is not PVM-aware); the host gives up on
; the marker after a few seconds.
;
; Assemble: nasm -f bin -o kvm-probe.bin templates/kvm-probe.asm
; The bytes are kept in src/qemu/accel/probe_guest.rs; a test there re-assembles this file
; with nasm (when nasm is on PATH) and compares.

bits 16
org 0x7c00

SECTORS   equ 3             ; the whole guest; the host pads the disk to 1 MiB (SeaBIOS
                            ; does not boot an AHCI disk smaller than one cylinder)
COM1      equ 0x3f8
EXIT_PORT equ 0xf4          ; -device isa-debug-exit,iobase=0xf4,iosize=0x04
EXIT_OK   equ 0x10          ; QEMU exits with (0x10 << 1) | 1 = 33
EXIT_BAD  equ 0x11          ; 35: the 64-bit work gave a wrong result

PML4      equ 0x1000
PDPT      equ 0x2000
PD        equ 0x3000
PT        equ 0x4000

CODE32    equ 0x08
DATA      equ 0x10
CODE64    equ 0x18

HIGH      equ 0xffffffff80000000  ; the top 2 GiB, mapped to 0..4 MiB as well

WORK_BASE   equ 0x100000            ; the window: 1..4 MiB
WORK_BYTES  equ 0x300000
WORK_MASK   equ 0x2ffff8            ; picks a qword inside the window
WORK_SEED   equ 0x9e3779b97f4a7c15
WORK_ROUNDS equ 1 << 22
WORK_SUM    equ 0x7a140849d2894656  ; the running sum: see work_sum() in probe_guest.rs

start:
    cli
    cld
    xor ax, ax
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov sp, 0x7c00
    jmp 0:load                  ; CS = 0 whatever segment:offset the BIOS used
load:                           ; the BIOS loaded sector 1 only: read the rest after it
    mov ax, 0x0200 + SECTORS - 1        ; AH 2: read, AL: sectors
    mov cx, 0x0002                      ; cylinder 0, from sector 2
    xor dh, dh                          ; head 0; DL: the BIOS's boot drive
    mov bx, 0x7e00
    int 0x13
    jnc real_mode
    hlt                                 ; (no stage names on COM1: the host says so)
    jmp $ - 1

    times 510 - ($ - $$) db 0
    dw 0xaa55

real_mode:
    mov si, msg_real
    mov dx, COM1
.print:
    lodsb
    test al, al
    jz .printed
    out dx, al
    jmp .print
.printed:
    in al, 0x92                 ; fast A20: memory above 1 MiB is used below
    or al, 2
    and al, 0xfe
    out 0x92, al
    lgdt [gdt_desc]
    mov eax, cr0
    or eax, 1
    mov cr0, eax
    jmp CODE32:protected_mode

bits 32
protected_mode:
    mov ax, DATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov esp, 0x7c00
    mov esi, msg_protected
    mov dx, COM1
.print:
    lodsb
    test al, al
    jz .printed
    out dx, al
    jmp .print
.printed:
    mov edi, PML4               ; clear PML4, PDPT, PD, PT
    xor eax, eax
    mov ecx, 4 * 4096 / 4
    rep stosd
    mov dword [PML4], PDPT | 3
    mov dword [PDPT], PD | 3
    mov dword [PD], PT | 3                  ; 0..2 MiB: 4 KiB pages
    mov dword [PD + 8], 0x200000 | 0x83     ; 2..4 MiB: one 2 MiB page
    mov dword [PML4 + 511 * 8], PDPT | 3    ; HIGH: the same PD again
    mov dword [PDPT + 510 * 8], PD | 3
    mov edi, PT
    mov eax, 3
    mov ecx, 512
.pte:
    mov [edi], eax
    add eax, 0x1000
    add edi, 8
    loop .pte
    mov eax, cr4
    or eax, 1 << 5              ; PAE
    mov cr4, eax
    mov eax, PML4
    mov cr3, eax
    mov ecx, 0xc0000080         ; EFER
    rdmsr
    or eax, 1 << 8              ; LME
    wrmsr
    mov eax, cr0
    or eax, 1 << 31             ; paging on: long mode is active
    mov cr0, eax
    jmp CODE64:long_mode

bits 64
long_mode:
    mov ax, DATA
    mov ds, ax
    mov es, ax
    mov ss, ax
    mov rax, HIGH + high_half   ; continue where a Linux kernel runs: the top 2 GiB
    jmp rax
high_half:
    mov rsp, HIGH + 0x7c00
    mov esi, msg_long
    call print64
    ; The work, through the high mapping of 1..4 MiB (4 KiB pages, then a 2 MiB page):
    ; clear the window, then WORK_ROUNDS times step a xorshift64 generator, add its value
    ; to a qword of the window that the value picks, and to a running sum; last, the sum of
    ; the window must equal the running sum, and that the value worked out beforehand.
    mov rdi, HIGH + WORK_BASE
    mov ecx, WORK_BYTES / 8
    xor eax, eax
    rep stosq
    mov rax, WORK_SEED
    mov ecx, WORK_ROUNDS
    xor ebx, ebx
    mov rsi, HIGH + WORK_BASE
.round:
    mov rdx, rax
    shl rdx, 13
    xor rax, rdx
    mov rdx, rax
    shr rdx, 7
    xor rax, rdx
    mov rdx, rax
    shl rdx, 17
    xor rax, rdx
    mov edx, eax
    and edx, WORK_MASK
    add [rsi + rdx], rax
    add rbx, rax
    dec ecx
    jnz .round
    mov ecx, WORK_BYTES / 8
    xor edx, edx
.sum:
    add rdx, [rsi]
    add rsi, 8
    dec ecx
    jnz .sum
    cmp rdx, rbx
    jne .bad
    mov rax, WORK_SUM
    cmp rbx, rax
    jne .bad
    mov esi, msg_ok
    call print64
    mov al, EXIT_OK
    out EXIT_PORT, al
    jmp halt
.bad:
    mov esi, msg_bad
    call print64
    mov al, EXIT_BAD
    out EXIT_PORT, al
halt:
    cli
    hlt
    jmp halt

print64:
    mov dx, COM1
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    ret

msg_real:      db "vmrun-probe: real", 0
msg_protected: db " protected", 0
msg_long:      db " long", 10, 0
msg_ok:        db "vmrun-kvm-ok", 10, 0
msg_bad:       db "vmrun-kvm-bad", 10, 0

align 8
gdt:
    dq 0
    dq 0x00cf9a000000ffff       ; 0x08: 32-bit code, flat
    dq 0x00cf92000000ffff       ; 0x10: data, flat
    dq 0x00af9a000000ffff       ; 0x18: 64-bit code
gdt_end:
gdt_desc:
    dw gdt_end - gdt - 1
    dd gdt

    times SECTORS * 512 - ($ - $$) db 0
