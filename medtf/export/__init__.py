"""medtf.export"""
