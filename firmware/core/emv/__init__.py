"""The EMV level 2 kernel for contact cards (EMV 4.4 Books 1 to 4), pure like the rest
of the core: BER-TLV and data object lists (`tlv`), the tag table (`tags`), the
terminal's parameters (`params`), offline data authentication (`oda`), the bits of
the TVR and TSI (`tvr`) and the transaction itself (`kernel`), which asks for each
APDU and decision and never does I/O."""
