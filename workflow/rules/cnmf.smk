# Source extraction items: the mcorr rule with other items; each reads its parent's
# registered movie or a raw movie, and writes estimates (HDF5) into its own folder.


use rule mcorr as cnmf with:
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "cnmf"),


use rule mcorr as cnmfe with:
    wildcard_constraints:
        item=ws.folder_pattern(ITEMS, FOLDERS, RESULTS, "cnmfe"),
